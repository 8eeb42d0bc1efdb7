# Monitoring: Prometheus scrape config, recording/alert rules and their promtool tests,
# Grafana dashboard. Binaries come from Debian's prometheus and prometheus-pushgateway.

# Tests find the binaries on PATH, or through PROMETHEUS_BIN / PROMTOOL_BIN / PUSHGATEWAY_BIN.

.PHONY: monitoring-bins monitoring-check monitoring-test monitoring-rules bench-monitoring

# Installs with apt-get only as root and only what is missing. policy-rc.d (exit 101) stops
# the packages' postinst from starting system daemons that would hold :9090/:9091; a
# policy-rc.d that already exists is left alone. Never fails: without the binaries the
# monitoring tests skip and `make up` starts the rest of the stack.
monitoring-bins: ## Install Prometheus, promtool and the Pushgateway (apt-get, when root)
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null \
		&& command -v prometheus-pushgateway >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "monitoring-bins: installing Debian prometheus prometheus-pushgateway"; \
		made_policy=; \
		if [ ! -e /usr/sbin/policy-rc.d ]; then \
			printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; \
			chmod +x /usr/sbin/policy-rc.d; made_policy=1; \
		fi; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq -o DPkg::Lock::Timeout=300 >/dev/null \
		&& apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
			prometheus prometheus-pushgateway >/dev/null \
		|| echo "monitoring-bins: apt-get failed; monitoring tests will skip"; \
		if [ -n "$$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	else \
		echo "monitoring-bins: Prometheus/Pushgateway not found. Install them with:"; \
		echo "  sudo apt-get install --no-install-recommends prometheus prometheus-pushgateway"; \
		echo "  (or put prometheus, promtool and pushgateway from prometheus.io on PATH)"; \
		echo "Monitoring tests will skip; make up starts the stack without them."; \
	fi

monitoring-rules: ## Render monitoring/templates/*.yml into monitoring/rules/ (production windows)
	python3 monitoring/render_rules.py

monitoring-check: monitoring-bins ## promtool check config/rules and run the rule unit tests
	cd monitoring && promtool check config prometheus.yml
	promtool check rules monitoring/rules/*.yml
	cd monitoring/tests && promtool test rules *.yml

monitoring-test: install monitoring-bins ## Run tests/monitoring (promtool + live Prometheus integration)
	$(PY) -m pytest tests/monitoring $(PYTEST_ARGS)

bench-monitoring: install monitoring-bins ## Scrape and rule-evaluation cost on the live stack (Prometheus at 1 s)
	$(PY) benchmarks/bench_monitoring.py --model-repository $(MODEL_REPOSITORY)

test: monitoring-bins
up: monitoring-bins
