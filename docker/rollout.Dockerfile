# syntax=docker/dockerfile:1
# The rollout controller image: slim Python, no TensorFlow, runs as a non-root user.
# Build from the repository root (README, "Container images"):
#   docker build -f docker/rollout.Dockerfile -t <registry>/mnist-serving/rollout:<tag> .
# docker/rollout.Dockerfile.dockerignore limits the context to what this file copies.
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

# Only the `rollout` extra of pyproject.toml (Prometheus queries, TF Serving's config and
# model-service messages without TensorFlow, Redis, the Kubernetes client), read from the
# file itself so the image can never drift from `pip install .[rollout]`, at the versions
# of constraints/constraints.txt, the same pins `make install` uses.
COPY pyproject.toml constraints/constraints.txt ./
RUN --mount=type=secret,id=pip_conf,target=/run/secrets/pip.conf \
    --mount=type=secret,id=pip_cert,target=/run/secrets/pip-cert.pem \
    python -m venv /opt/venv \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['rollout']))" \
        > /tmp/requirements-rollout.txt \
    && PIP_CONFIG_FILE=/run/secrets/pip.conf /opt/venv/bin/pip install \
        --constraint constraints.txt --requirement /tmp/requirements-rollout.txt

# grpcio-tools lives in its own venv, so it never reaches the runtime stage. As for the
# gateway: every .proto of rollout/protos into one descriptor set with its imports, in
# rollout/_proto/ (generated code apart from hand-written code, never committed).
RUN --mount=type=secret,id=pip_conf,target=/run/secrets/pip.conf \
    --mount=type=secret,id=pip_cert,target=/run/secrets/pip-cert.pem \
    python -m venv /opt/protoc \
    && PIP_CONFIG_FILE=/run/secrets/pip.conf /opt/protoc/bin/pip install \
        --constraint constraints.txt grpcio-tools==1.85.1
COPY rollout ./rollout
WORKDIR /src/rollout/protos
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
# The package with its policies (rollout/policies/*.yaml) and the compiled protos.
COPY --from=builder /src/rollout /app/rollout
# The recording rules: the controller's PromQL is theirs with the policy's window.
COPY monitoring/rules /app/monitoring/rules

WORKDIR /app
USER 10001:10001
# 9102: /metrics (rollout_*) and /healthz (ROLLOUT_METRICS_PORT).
EXPOSE 9102
ENTRYPOINT ["python", "-m", "rollout"]
CMD ["run"]
