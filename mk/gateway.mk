# Gateway: compiled TF Serving proto subset, and the gateway benchmark.

GATEWAY_PROTO_DIR := gateway/protos
GATEWAY_PROTO_OUT := gateway/_proto/tensorflow_serving_subset.binpb
GATEWAY_PROTOS := $(wildcard $(GATEWAY_PROTO_DIR)/*/*/*.proto $(GATEWAY_PROTO_DIR)/*/*/*/*.proto)

.PHONY: protos bench-gateway

install: protos

protos: $(GATEWAY_PROTO_OUT) ## Compile the gateway's TF Serving proto subset (grpcio-tools)

# One descriptor set with its imports; gateway/tfs_protos.py builds the classes from it.
$(GATEWAY_PROTO_OUT): $(GATEWAY_PROTOS) | $(STAMP)
	@mkdir -p $(dir $@)
	$(PY) -m grpc_tools.protoc -I$(GATEWAY_PROTO_DIR) --include_imports \
		--descriptor_set_out=$@ $(patsubst $(GATEWAY_PROTO_DIR)/%,%,$(GATEWAY_PROTOS))

bench-gateway: install ## Gateway vs Flask+model.predict baseline: JSON and PNG at 8 connections
	$(PY) -m trainer train --if-empty
	$(PY) benchmarks/bench_gateway.py
