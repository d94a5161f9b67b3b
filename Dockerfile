# syntax=docker/dockerfile:1
# modelreg: one image for the API (`serve`), the validation worker (`worker`), the rollout
# controller (`controller`), the migrations (`db upgrade`) and the model servers
# (`serve-model`, with `fetch-artifact` as their initContainer).
#
#   docker build -t modelreg:0.1.0 .
#   docker run --rm -p 8000:8000 modelreg:0.1.0              # modelreg serve --host 0.0.0.0
#   docker run --rm modelreg:0.1.0 controller                # any other subcommand
#
# The base is the floating python:3.11-slim tag, not a digest: pin it for reproducible
# builds with `--build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest>`.
ARG PYTHON_IMAGE=python:3.11-slim

# -- builder: a virtual environment with modelreg and the Kubernetes client -------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/modelreg
ENV PATH=/opt/modelreg/bin:$PATH

WORKDIR /src
# The dependencies ship as wheels (psycopg[binary], onnxruntime, numpy…): no compiler is needed.
COPY pyproject.toml README.md ./
COPY registry ./registry
COPY validators ./validators
COPY deployers ./deployers
COPY controller ./controller
COPY api ./api
COPY migrations ./migrations
# A regular (non-editable) install, so that the venv holds everything and /src is not needed.
# DL3013 (pin pip packages) does not apply: this installs the project from /src, and its
# dependency ranges live in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install ".[kubernetes]" \
    && modelreg --help >/dev/null

# -- final: the venv only, a non-root user, no build tools ------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="modelreg" \
      org.opencontainers.image.description="Model registry and deployment controller" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/modelreg/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODELREG_DATA_DIR=/data \
    MODELREG_CREDENTIALS_FILE=/data/credentials

RUN groupadd --system --gid 10001 modelreg \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin modelreg \
    && mkdir -p /data \
    && chown 10001:10001 /data

COPY --from=builder /opt/modelreg /opt/modelreg

USER 10001:10001
WORKDIR /data
EXPOSE 8000

ENTRYPOINT ["modelreg"]
CMD ["serve", "--host", "0.0.0.0"]
