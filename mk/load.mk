# Load tests with Locust (loadtests/). `make load` drives a running stack (`make up`, or
# LOAD_HOST=... for a cluster's gateway) from one Locust process; `make load-distributed`
# from a master and WORKERS workers on this machine. Both write reports/<run>/: Locust's
# HTML and CSV, summary.md with the SLO verdicts, charts, and the server side from
# Prometheus (PROMETHEUS_URL). The SLO gate sets the exit code.
# `make load-smoke` runs the short Locust tests that `make test` runs.

LOCAL_GATEWAY := http://127.0.0.1:8080
LOAD_HOST ?= $(LOCAL_GATEWAY)
LOAD_USERS ?= 10
LOAD_SPAWN_RATE ?= 5
LOAD_RUN_TIME ?= 60s
WORKERS ?= 2
# The loopback port a distributed run's master listens on for its workers.
LOCUST_MASTER_PORT ?= 5557
REPORTS_DIR ?= reports
# reports/<LOAD_RUN>/; empty: <UTC time>-local or <UTC time>-<N>workers.
LOAD_RUN ?=
# The local stack's Prometheus (make up) when the gateway is the local one; set it otherwise
# (a port-forwarded in-cluster Prometheus), or leave it empty for no server side.
PROMETHEUS_URL ?= $(if $(filter $(LOCAL_GATEWAY),$(LOAD_HOST)),http://127.0.0.1:9090)
# The in-cluster master's web UI, through `kubectl port-forward deploy/locust-master 8089`.
LOCUST_URL ?= http://127.0.0.1:8089
LOCUST_ARGS ?=

LOAD_REPORT_OPTIONS = --reports-dir $(REPORTS_DIR) $(if $(LOAD_RUN),--run-name $(LOAD_RUN)) \
	$(if $(PROMETHEUS_URL),--prometheus-url $(PROMETHEUS_URL))
LOAD_LOCUST_OPTIONS = --host $(LOAD_HOST) --users $(LOAD_USERS) --spawn-rate $(LOAD_SPAWN_RATE) \
	--run-time $(LOAD_RUN_TIME) --stop-timeout 5 $(LOCUST_ARGS)

.PHONY: load load-distributed load-fetch load-compare load-scaling load-smoke

load: install ## Load-test LOAD_HOST (default the local gateway) from one Locust process; report in reports/<run>/
	$(PY) -m loadtests run $(LOAD_REPORT_OPTIONS) $(LOAD_LOCUST_OPTIONS)

load-distributed: install ## The same from a Locust master and WORKERS workers on this machine (WORKERS=2)
	$(PY) -m loadtests run --workers $(WORKERS) --master-port $(LOCUST_MASTER_PORT) \
		$(LOAD_REPORT_OPTIONS) $(LOAD_LOCUST_OPTIONS)

load-fetch: install ## Download the in-cluster run from the Locust master at LOCUST_URL (port-forward) and report it
	$(PY) -m loadtests fetch --locust-url $(LOCUST_URL) $(LOAD_REPORT_OPTIONS)

load-compare: install ## Two reports side by side with ratios B/A: make load-compare A=reports/<run> B=reports/<run>
	@test -n "$(A)" && test -n "$(B)" \
		|| { echo "usage: make load-compare A=reports/<run> B=reports/<run>"; exit 2; }
	@$(PY) -m loadtests compare $(A) $(B)

load-scaling: install ## req/s of 1 vs 2 Locust workers against a no-op target, with CPU per process
	$(PY) -m loadtests scaling --reports-dir $(REPORTS_DIR)

load-smoke: install ## Short Locust runs against live servers: scenarios, SLO gate, distributed run and report
	$(PY) -m pytest tests/loadtests -q $(PYTEST_ARGS)
