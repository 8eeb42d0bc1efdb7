# syntax=docker/dockerfile:1
# The gateway image: slim Python, no TensorFlow, runs as a non-root user.
# Build from the repository root (README, "Container images"):
#   docker build -f docker/gateway.Dockerfile -t <registry>/mnist-serving/gateway:<tag> .
# docker/gateway.Dockerfile.dockerignore limits the context to what this file copies.
# `make images` builds the same file with buildah, on a local base (PYTHON_IMAGE).
# Behind a proxy or a private index, pass pip's settings as build secrets, mounted for the
# pip steps only and never written to a layer:
#   --secret id=pip_conf,src=<a pip.conf> [--secret id=pip_cert,src=<CA bundle>]
# (the pip.conf names the bundle as `cert = /run/secrets/pip-cert.pem`).

# Fully qualified, so buildah and podman resolve it as Docker does.
ARG PYTHON_IMAGE=docker.io/library/python:3.11.13-slim-bookworm

# --- builder: dependencies into a venv, the TF Serving proto subset compiled ---------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src

# Only the `gateway` extra of pyproject.toml, read from the file itself so the image can
# never drift from `pip install .[gateway]`; TensorFlow is in no part of it. Versions come
# from constraints/constraints.txt, the same pins `make install` uses.
COPY pyproject.toml constraints/constraints.txt ./
RUN --mount=type=secret,id=pip_conf,target=/run/secrets/pip.conf \
    --mount=type=secret,id=pip_cert,target=/run/secrets/pip-cert.pem \
    python -m venv /opt/venv \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['gateway']))" \
        > /tmp/requirements-gateway.txt \
    && PIP_CONFIG_FILE=/run/secrets/pip.conf /opt/venv/bin/pip install \
        --constraint constraints.txt --requirement /tmp/requirements-gateway.txt

# grpcio-tools lives in its own venv, so it never reaches the runtime stage. The protoc
# call is the one `make protos` runs (mk/gateway.mk): one descriptor set with imports.
RUN --mount=type=secret,id=pip_conf,target=/run/secrets/pip.conf \
    --mount=type=secret,id=pip_cert,target=/run/secrets/pip-cert.pem \
    python -m venv /opt/protoc \
    && PIP_CONFIG_FILE=/run/secrets/pip.conf /opt/protoc/bin/pip install \
        --constraint constraints.txt grpcio-tools==1.85.1
COPY gateway ./gateway
WORKDIR /src/gateway/protos
RUN mkdir -p ../_proto \
    && find . -name '*.proto' -printf '%P\n' | sort \
        | xargs /opt/protoc/bin/python -m grpc_tools.protoc -I. --include_imports \
            --descriptor_set_out=../_proto/tensorflow_serving_subset.binpb

# --- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /src/gateway /app/gateway

WORKDIR /app
USER 10001:10001
# 8080: the API; 9100: /metrics alone, when GATEWAY_METRICS_PORT sets it (as Kubernetes does).
EXPOSE 8080 9100
ENTRYPOINT ["python", "-m", "gateway"]
