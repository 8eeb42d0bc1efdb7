# Container images: every docker/<name>.Dockerfile, built with buildah from the same file
# a Docker user builds (README, "Container images"). No daemon and no container runtime:
# buildah builds and runs with chroot isolation. docker/images.py does the work; its
# cache (buildah storage, the local Debian base) lives in .cache/images/.

# Where the images are pushed, and their tag: k8s/base/kustomization.yaml names the same.
REGISTRY ?= registry.example.com/mnist-serving
IMAGE_TAG ?= 0.1.0
# Base image of every Dockerfile. Empty: a local Debian base (debootstrap), for machines
# without a registry; set it to build on the official one, e.g.
# PYTHON_IMAGE=docker.io/library/python:3.11.13-slim-bookworm.
PYTHON_IMAGE ?=
IMAGE_NAMES := $(patsubst docker/%.Dockerfile,%,$(wildcard docker/*.Dockerfile))
IMAGES_TOOL = $(PYTHON) docker/images.py --registry $(REGISTRY) --tag $(IMAGE_TAG)
CONSTRAINTS := constraints/constraints.txt

.PHONY: image-tools image-base images image-list push-images images-clean test-images constraints \
	tf-serving-check

test: image-tools

# apt-get, only as root and only what is missing, never failing: without the tools
# `make images` says so and the image tests skip, saying why.
image-tools: ## Install buildah and debootstrap (apt-get, when root)
	@scripts/apt-install-missing.sh image-tools "buildah debootstrap" "buildah debootstrap" \
		"Image tests will skip; Docker users build with the commands in the README."

image-base: image-tools ## Build (once) the local Debian base image with debootstrap
	$(IMAGES_TOOL) base

images: image-tools ## Build every docker/*.Dockerfile with buildah (one: make image-<name>; PYTHON_IMAGE=... for another base)
	$(IMAGES_TOOL) build --python-image "$(PYTHON_IMAGE)" $(IMAGE_NAMES)

# One image: make image-gateway, make image-trainer. Explicit targets (image-tools,
# image-base, image-list) win over this pattern.
image-%: image-tools
	$(IMAGES_TOOL) build --python-image "$(PYTHON_IMAGE)" $*

image-list: ## Print the image references make images builds
	@$(IMAGES_TOOL) list $(IMAGE_NAMES)

push-images: images ## buildah push every image to REGISTRY (log in first: buildah login)
	$(IMAGES_TOOL) push $(IMAGE_NAMES)

images-clean: ## Remove the image cache (.cache/images: buildah storage, local base)
	-@command -v buildah >/dev/null && [ -f .cache/images/storage.conf ] \
		&& CONTAINERS_STORAGE_CONF=.cache/images/storage.conf buildah rm --all >/dev/null
	rm -rf .cache/images

# The gateway and rollout images are tested by `make test` (tests/images); this adds every other image,
# the trainer's training run among them.
test-images: install images ## Build every image and test what runs in it (tests/images)
	IMAGE_TESTS=all $(PY) -m pytest tests/images $(PYTEST_ARGS)

# Not `install`: that needs this file, and this target must work when it is missing.
constraints: | $(PY) ## Re-pin constraints/constraints.txt from pyproject.toml (UV_COMPILE_ARGS=--upgrade to move)
	$(PY) -m pip install --quiet uv
	$(UV) pip compile pyproject.toml --all-extras --universal --python-version 3.11 \
		--custom-compile-command "make constraints" --quiet $(UV_COMPILE_ARGS) -o $(CONSTRAINTS)

# TF Serving is the one image of the stack that is pulled, not built: serving/config/
# TF_SERVING_IMAGE.md says why its tag, and this is the check it asks for.
tf-serving-check: ## Before deploying: the TF Serving tags the overlays pin exist; print their digests (skopeo)
	@command -v skopeo >/dev/null || { echo "tf-serving-check: needs skopeo (apt-get install skopeo)"; exit 2; }
	@for overlay in k8s/overlays/*/; do \
		for image in $$($(KUBECTL) kustomize $$overlay | grep -o 'image: tensorflow/serving:[^" ]*' | cut -d' ' -f2 | sort -u); do \
			printf '%s %s ' "$$overlay" "$$image"; \
			skopeo inspect --format '{{.Digest}} created {{.Created}}' "docker://docker.io/$$image" || exit 1; \
		done; \
	done
