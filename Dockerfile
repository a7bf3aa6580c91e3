# syntax=docker/dockerfile:1
#
# flyte-connector-service image: a virtual environment built in one stage, copied alone into a
# slim Python runtime (no compilers, no build tools, no source tree).
#
#   docker build -t flyte-connector-service .
#   docker build -t my-connectors --build-arg EXTRA_PACKAGES="my-connectors==1.2.0 s3fs" .
#
# EXTRA_PACKAGES are pip requirement specifiers installed into the same venv; packages that
# declare a `flyte.connectors` entry point are served without further configuration.
# Packages that need a compiler (an sdist without wheels) can be built with a full builder
# image, which has gcc and headers; only the venv reaches the final image either way:
#
#   docker build --build-arg BUILDER_IMAGE=python:3.11-bookworm --build-arg EXTRA_PACKAGES=... .
#
# Both stages must use the same Python minor version and the same /usr/local prefix (the venv's
# interpreter is a symlink to /usr/local/bin/python3.X); the official python images do.
#
# No image is published: build, tag and push your own (REGISTRY is yours), then point
# deploy/base at it. deploy/README.md shows this and the `FROM REGISTRY/flyte-connector-service`
# + `pip install` pattern for connectors packaged separately:
#
#   docker build -t REGISTRY/flyte-connector-service:0.1.0 . && docker push REGISTRY/flyte-connector-service:0.1.0

ARG PYTHON_VERSION=3.11
ARG BUILDER_IMAGE=python:${PYTHON_VERSION}-slim-bookworm
ARG RUNTIME_IMAGE=python:${PYTHON_VERSION}-slim-bookworm

# --------------------------------------------------------------------------------------------
FROM ${BUILDER_IMAGE} AS builder

# bash with pipefail, so a failing command on the left of a pipe fails the build.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src
# Only what the package build needs (see .dockerignore): metadata first, then the code.
COPY pyproject.toml README.md ./
COPY connector_service ./connector_service
COPY connectors ./connectors
COPY sensors ./sensors

# A regular (non-editable) install, so the venv does not refer back to /src. The `all` extra is
# YAML (--config-file / CONNECTOR_CONFIG_FILE) and the client libraries of the bundled catalogue
# (s3fs, asyncpg, asyncssh), each imported only when its connector is first used, so idle memory
# does not grow. pip byte-compiles what it installs, so the runtime never needs to write .pyc
# files (it runs with a read-only root file system).
RUN pip install --no-cache-dir "./[all]"

# Your own connector packages, e.g. --build-arg EXTRA_PACKAGES="flytekitplugins-foo==1.2 s3fs".
# xargs splits on blanks (and does nothing for an empty value) without an unquoted expansion.
ARG EXTRA_PACKAGES=""
RUN echo "${EXTRA_PACKAGES}" | xargs --no-run-if-empty pip install --no-cache-dir \
    && pip check

# --------------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime

LABEL org.opencontainers.image.title="flyte-connector-service" \
      org.opencontainers.image.description="A lean, standalone Flyte connector gRPC daemon." \
      org.opencontainers.image.licenses="Apache-2.0"

# PYTHONDONTWRITEBYTECODE: no .pyc writes at run time (the root file system is read-only).
# HOME and TMPDIR point at /tmp, the one writable place (an emptyDir in deploy/base).
# CONNECTOR_LOG_FORMAT=json: one JSON object per log line, as Kubernetes log pipelines expect;
# override with --log-format text or the env var.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    CONNECTOR_LOG_FORMAT=json

COPY --from=builder /opt/venv /opt/venv

# CONNECTOR_APP_DIR defaults to "."; modules for --connector MODULE:ATTR can be copied here.
WORKDIR /app

# A numeric user, so Kubernetes can verify runAsNonRoot without an /etc/passwd entry.
USER 65532:65532

# 8000: gRPC (flyteidl agent services, grpc.health.v1, reflection); 9090: Prometheus /metrics.
EXPOSE 8000 9090

ENTRYPOINT ["/opt/venv/bin/connector-service", "serve"]
