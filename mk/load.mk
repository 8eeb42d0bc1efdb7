# Load tests with Locust (loadtests/). `make load` drives a running stack (`make up`, or
# HOST=... for a cluster); `make load-smoke` runs the short smoke tests that `make test` runs.

HOST ?= http://127.0.0.1:8080
LOAD_USERS ?= 10
LOAD_SPAWN_RATE ?= 5
LOAD_RUN_TIME ?= 60s
REPORTS_DIR ?= reports
LOCUST_ARGS ?=

.PHONY: load load-smoke

load: install ## Load-test HOST (default the local gateway) headless; CSV + HTML report and SLO verdict in reports/
	$(PY) -m locust -f loadtests/locustfile.py --headless --only-summary \
		--host $(HOST) --users $(LOAD_USERS) --spawn-rate $(LOAD_SPAWN_RATE) \
		--run-time $(LOAD_RUN_TIME) --stop-timeout 5 \
		--csv $(REPORTS_DIR)/load --html $(REPORTS_DIR)/load.html $(LOCUST_ARGS)

load-smoke: install ## Short Locust runs against a live stack: the locustfile works, the SLO gate fails when it should
	$(PY) -m pytest tests/loadtests -q $(PYTEST_ARGS)
