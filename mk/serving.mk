# Embedded model server (serving/): generated config protos, local run, benchmark.

SERVING_PROTO_OUT := serving/_proto/tf_serving_configs_pb2.py
SERVING_GRPC_PORT ?= 8500
SERVING_REST_PORT ?= 8501

.PHONY: serving-protos serve bench-serving test-serving

# TF Serving's batching and monitoring config messages are not in tensorflow-serving-api.
$(SERVING_PROTO_OUT): serving/protos/tf_serving_configs.proto | $(STAMP)
	$(PY) -m grpc_tools.protoc -Iserving/protos --python_out=serving/_proto $<

serving-protos: $(SERVING_PROTO_OUT) ## Compile TF Serving's batching/monitoring config protos for the embedded server

install: serving-protos

serve: install ## Run the embedded model server on :8500/:8501 with serving/config/ (MODEL_REPOSITORY)
	$(PY) -m serving --port=$(SERVING_GRPC_PORT) --rest_api_port=$(SERVING_REST_PORT) \
		--model_name=$(MODEL_NAME) --model_base_path=$(abspath $(MODEL_REPOSITORY))/$(MODEL_NAME) \
		--enable_batching --batching_parameters_file=serving/config/batching.config \
		--monitoring_config_file=serving/config/monitoring.config

test-serving: install ## Run the serving tests only
	$(PY) -m pytest tests/serving -q $(PYTEST_ARGS)

bench-serving: install ## Benchmark gRPC Predict: embedded server (batching off/on) vs no-op gRPC and in-process TF
	$(PY) benchmarks/bench_serving.py
