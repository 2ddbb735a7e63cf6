#!/usr/bin/env bash
# Fill deploy/wheelhouse/ with every wheel the image installs, from this machine's pip (its indexes,
# find-links and caches: `pip config list`), so that `docker build --build-arg WHEELHOUSE_ONLY=1`
# installs with `pip --no-index --find-links` and reaches no index (docs/deployment.md,
# "Building offline"). The wheels are for CPython 3.11 on glibc x86_64 (Debian bookworm's and
# python:3.11-slim-bookworm's); the folder is git- and never image-tracked (only the builder
# stage sees it). Files already there are kept, so a second run downloads nothing.
#
#   deploy/wheelhouse.sh                      # learner,service extras + torch==2.13.0 (CPU)
#   RSS_EXTRAS=service deploy/wheelhouse.sh   # what --build-arg RSS_EXTRAS=service needs
#   PYTHON=.venv/bin/python deploy/wheelhouse.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
EXTRAS=${RSS_EXTRAS:-learner,service}
DEST=${WHEELHOUSE_DIR:-deploy/wheelhouse}
# The Dockerfile's pin (ARG TORCH_VERSION), read from it so the two cannot drift.
TORCH_VERSION=$(sed -n 's/^ARG TORCH_VERSION=//p' Dockerfile)

reqs=$(mktemp)
trap 'rm -f "$reqs"' EXIT
{
    echo "torch==$TORCH_VERSION"
    "$PYTHON" deploy/requirements.py "$EXTRAS"
    # redis-py needs async-timeout on Python < 3.11.3 (Debian bookworm's python3 is 3.11.2); pip
    # evaluates that marker with this machine's Python, not the target's, so it is named here.
    echo "async-timeout>=4.0.3"
} >"$reqs"

# --platform/--python-version: the image's interpreter and libc (glibc 2.36), whatever this machine
# runs; pip does not widen one manylinux tag to the older ones, so every one is listed. Binary
# wheels only: no compiler in the image, and no sdist builds here.
platforms=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
for minor in $(seq 5 36); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
mkdir -p "$DEST"
"$PYTHON" -m pip download --quiet --disable-pip-version-check --dest "$DEST" --only-binary=:all: \
    --implementation cp --python-version 3.11 "${platforms[@]}" -r "$reqs"
echo "wheelhouse: $(find "$DEST" -name '*.whl' | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST" >&2
