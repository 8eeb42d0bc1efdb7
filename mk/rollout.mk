# Rollout controller (rollout/): its TF Serving proto subset, the controller, its CLI.

ROLLOUT_PROTO_DIR := rollout/protos
ROLLOUT_PROTO_OUT := rollout/_proto/tensorflow_serving_subset.binpb
ROLLOUT_PROTOS := $(wildcard $(ROLLOUT_PROTO_DIR)/*/*/*.proto $(ROLLOUT_PROTO_DIR)/*/*/*/*.proto)

.PHONY: rollout-protos rollout-status

install: rollout-protos

rollout-protos: $(ROLLOUT_PROTO_OUT) ## Compile the controller's TF Serving config and model-service subset

# TF Serving's ModelServerConfig and ModelService messages, upstream's .proto files, in one
# descriptor set: the controller reads and writes the model config without TensorFlow.
$(ROLLOUT_PROTO_OUT): $(ROLLOUT_PROTOS) | $(STAMP)
	@mkdir -p $(dir $@)
	$(PY) -m grpc_tools.protoc -I$(ROLLOUT_PROTO_DIR) --include_imports \
		--descriptor_set_out=$@ $(patsubst $(ROLLOUT_PROTO_DIR)/%,%,$(ROLLOUT_PROTOS))

rollout-status: install ## Each model's versions, rollout stage, traffic share and last decision
	ROLLOUT_CONFIG_PATH=$(RUN_DIR)/models.config $(PY) -m rollout status

.PHONY: bench-rollout

bench-rollout: install ## The rollout loop end to end: a bad version rolled back, a fine-tuned one promoted (table)
	$(PY) benchmarks/bench_rollout.py $(BENCH_ARGS)
