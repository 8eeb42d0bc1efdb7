# The entry point for everything. `make help` lists the targets.
# Component targets live in mk/*.mk; each may add prerequisites to `install`
# or `test` (e.g. `install: protos`) without touching this file.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed
EXTRAS ?= trainer,serving,gateway,rollout,dev
MODEL_REPOSITORY ?= model_repository
MODEL_NAME ?= mnist
RUN_DIR ?= .run
PYTEST_ARGS ?=

export MODEL_REPOSITORY MODEL_NAME RUN_DIR
# TensorFlow's C++ start-up chatter hides the lines people need to read.
export TF_CPP_MIN_LOG_LEVEL ?= 2

include $(sort $(wildcard mk/*.mk))

.PHONY: help venv install lint format test demo clean

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | sort -u | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)

# uv resolves and installs TensorFlow's wheel set in seconds rather than minutes. The
# constraints pin the versions the container images install too (`make constraints`).
$(STAMP): pyproject.toml constraints/constraints.txt | $(PY)
	$(PY) -m pip install --quiet --upgrade pip uv
	$(UV) pip install --python $(PY) --quiet -e ".[$(EXTRAS)]" \
		--constraint constraints/constraints.txt
	touch $@

venv: $(STAMP) ## Create .venv and install every component with its dev tools

install: $(STAMP) ## Install (creates .venv on first use)

lint: install ## Ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: install ## Run every test (README's second command)
	$(PY) -m pytest $(PYTEST_ARGS)

# The demo's model: the one that reads uploads best within the demo's time budget
# (README, "Models that read uploads"): two epochs over the whole MNIST (the wheel of
# `make mnist-data`), the learning rate decaying from 0.003 to 0 along them.
DEMO_TRAIN_ARGS ?= --model cnn --augment --epochs 2 --lr-schedule cosine --learning-rate 0.003

demo: install ## Train a model if none exists, start the stack, send real images (README's first command)
	$(PY) -m trainer train --if-empty $(DEMO_TRAIN_ARGS)
	$(MAKE) --no-print-directory up
	$(PY) scripts/demo.py
	$(PY) -m trainer log summary --log-dir $(GATEWAY_LOG_DIR)
	ROLLOUT_CONFIG_PATH=$(RUN_DIR)/models.config $(PY) -m rollout status

clean: ## Remove the venv, run directory and reports (keeps the model repository)
	rm -rf $(VENV) $(RUN_DIR) reports .pytest_cache .ruff_cache
