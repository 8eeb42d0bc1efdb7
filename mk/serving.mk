# Embedded model server (serving/): TF Serving's config protos, local run, benchmark.

SERVING_PROTO_OUT := serving/_proto/tf_serving_configs.binpb
SERVING_TF_DESCRIPTORS := serving/_proto/tensorflow_deps.binpb
SERVING_PROTOS := serving/protos/tensorflow_serving/servables/tensorflow/session_bundle_config.proto \
	serving/protos/tensorflow_serving/config/monitoring_config.proto
# The Open Inference Protocol's gRPC service, vendored unchanged from KServe
# (python/kserve/kserve/protocol/grpc/grpc_predict_v2.proto, last changed in eb794b5).
SERVING_V2_PROTO := serving/protos/kserve/grpc_predict_v2.proto
SERVING_V2_OUT := serving/_proto/grpc_predict_v2.binpb
SERVING_GRPC_PORT ?= 8500
SERVING_REST_PORT ?= 8501
# tritonclient, the v2 protocol tests' independent client, pins protobuf < 7 (and ml-dtypes,
# greenlet), which the main venv excludes: it gets its own venv, as the k8s tools do, and
# the tests run it as a subprocess. Every package is pinned in the requirements file.
TRITONCLIENT_VENV := .cache/tritonclient
TRITONCLIENT_STAMP := $(TRITONCLIENT_VENV)/.installed
TRITONCLIENT_REQUIREMENTS := tests/serving/tritonclient-requirements.txt

export TRITONCLIENT_PYTHON := $(abspath $(TRITONCLIENT_VENV))/bin/python

.PHONY: serving-protos serve bench-serving test-serving tritonclient

# BatchingParameters and MonitoringConfig are not in tensorflow-serving-api: their .proto
# files are vendored unchanged from TF Serving and compiled into one descriptor set, against
# the TensorFlow protos they import (read from the installed TensorFlow).
$(SERVING_PROTO_OUT): $(SERVING_PROTOS) serving/protos/tensorflow_descriptors.py | $(STAMP)
	@mkdir -p $(dir $@)
	$(PY) serving/protos/tensorflow_descriptors.py $(SERVING_TF_DESCRIPTORS)
	$(PY) -m grpc_tools.protoc --descriptor_set_in=$(SERVING_TF_DESCRIPTORS) -Iserving/protos \
		--include_imports --descriptor_set_out=$@ $(patsubst serving/protos/%,%,$(SERVING_PROTOS))

# A descriptor set, like the others: serving/protocol/v2_messages.py builds the message
# classes in a private pool and the servicer from grpc's generic handlers.
$(SERVING_V2_OUT): $(SERVING_V2_PROTO) | $(STAMP)
	@mkdir -p $(dir $@)
	$(PY) -m grpc_tools.protoc -I$(dir $(SERVING_V2_PROTO)) --descriptor_set_out=$@ \
		$(notdir $(SERVING_V2_PROTO))

serving-protos: $(SERVING_PROTO_OUT) $(SERVING_V2_OUT) ## Compile the embedded server's protos (TF Serving's batching/monitoring configs, KServe's v2 gRPC)

install: serving-protos

test test-serving: tritonclient

$(TRITONCLIENT_STAMP): $(TRITONCLIENT_REQUIREMENTS) | $(STAMP)
	rm -rf $(TRITONCLIENT_VENV)
	$(PYTHON) -m venv $(TRITONCLIENT_VENV)
	$(UV) pip install --python $(TRITONCLIENT_VENV)/bin/python --quiet -r $(TRITONCLIENT_REQUIREMENTS)
	touch $@

tritonclient: $(TRITONCLIENT_STAMP) ## Install tritonclient[http,grpc] into its own venv (.cache/tritonclient) for the v2 tests

serve: install ## Run the embedded model server on :8500/:8501 with serving/config/ (MODEL_REPOSITORY)
	$(PY) -m serving --port=$(SERVING_GRPC_PORT) --rest_api_port=$(SERVING_REST_PORT) \
		--model_name=$(MODEL_NAME) --model_base_path=$(abspath $(MODEL_REPOSITORY))/$(MODEL_NAME) \
		--enable_batching --batching_parameters_file=serving/config/batching.config \
		--monitoring_config_file=serving/config/monitoring.config

test-serving: install ## Run the serving tests only
	$(PY) -m pytest tests/serving -q $(PYTEST_ARGS)

bench-serving: install ## Benchmark gRPC Predict: embedded server (batching off/on) vs no-op gRPC and in-process TF
	$(PY) benchmarks/bench_serving.py

# KServe's Python ModelServer, the peer of `make bench-peers`, in its own venv: kserve needs
# a starlette the project's pin excludes. Pinned in benchmarks/kserve-requirements.txt.
KSERVE_VENV := .cache/kserve
KSERVE_STAMP := $(KSERVE_VENV)/.installed
KSERVE_REQUIREMENTS := benchmarks/kserve-requirements.txt

.PHONY: kserve-env wrk-bin bench-peers

$(KSERVE_STAMP): $(KSERVE_REQUIREMENTS) | $(STAMP)
	rm -rf $(KSERVE_VENV)
	$(PYTHON) -m venv $(KSERVE_VENV)
	$(UV) pip install --python $(KSERVE_VENV)/bin/python --quiet -r $(KSERVE_REQUIREMENTS)
	touch $@

kserve-env: $(KSERVE_STAMP) ## Install KServe's ModelServer (and TensorFlow) into .cache/kserve for bench-peers

# Debian's wrk, the HTTP load generator of bench-peers: installed only as root, only if missing.
wrk-bin: ## Install Debian's wrk (apt-get, when root)
	@scripts/apt-install-missing.sh wrk-bin wrk wrk "make bench-peers needs it."

bench-peers: install kserve-env wrk-bin ## REST (v1 and v2) vs KServe's ModelServer with wrk, c=8 and c=64, alternating rounds
	$(PY) -m trainer train --if-empty
	$(PY) benchmarks/bench_peers.py
