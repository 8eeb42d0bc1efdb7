# Reliability: fault-injection scenarios against the real local stack (tests/reliability).
# Each scenario prints a one-line summary and writes reports/reliability/<scenario>.json.

.PHONY: test-reliability reliability-report

test-reliability: install ## Rollover, canary, kill -9, corrupt model, fuzzing, hostile inputs, SIGTERM (reports/reliability/)
	$(PY) -m pytest tests/reliability -m reliability -s -q $(PYTEST_ARGS)

reliability-report: ## Print the reliability figures (requests, failures, recovery) from reports/reliability/
	@$(PY) -m tests.reliability.report
