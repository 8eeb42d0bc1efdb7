# syntax=docker/dockerfile:1
# The trainer image: TensorFlow and the trainer package, run as a non-root user.
# Build from the repository root:
#   docker build -f docker/trainer.Dockerfile -t <registry>/mnist-serving/trainer:<tag> .
# docker/trainer.Dockerfile.dockerignore limits the context to what this file copies.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PATH=/opt/venv/bin:$PATH \
    TF_CPP_MIN_LOG_LEVEL=2

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /app

# Only the `trainer` extra (TensorFlow, TF Serving's protos for warm-up records, the
# offline MNIST sample), read from pyproject.toml itself so the image never drifts.
COPY pyproject.toml ./
RUN python -m venv /opt/venv \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['trainer']))" \
        > /tmp/requirements-trainer.txt \
    && pip install --requirement /tmp/requirements-trainer.txt \
    && rm /tmp/requirements-trainer.txt

COPY trainer ./trainer

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
USER 10001:10001

# The model repository is a volume (a PersistentVolumeClaim in Kubernetes).
ENV MODEL_REPOSITORY=/models
ENTRYPOINT ["python", "-m", "trainer"]
CMD ["train", "--help"]
