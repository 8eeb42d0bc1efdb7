# Redis: the gateway's shared record of scored prediction ids (feedback deduplication).
# The binary comes from Debian's redis-server; `make up` and the tests that need it start
# their own instance on 127.0.0.1 (scripts/stack.py, tests/fixtures/redis.py).

# Tests and scripts find the binary on PATH, or through REDIS_SERVER_BIN.

.PHONY: redis-bin

# Installs with apt-get only as root and only when missing. policy-rc.d (exit 101) stops
# the package's postinst from starting a system Redis that would hold :6379; a
# policy-rc.d that already exists is left alone. Never fails: without the binary the
# Redis tests skip with the command to run, and `make up` says what is missing.
redis-bin: ## Install redis-server (apt-get, when root)
	@if command -v redis-server >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "redis-bin: installing Debian redis-server"; \
		made_policy=; \
		if [ ! -e /usr/sbin/policy-rc.d ]; then \
			printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; \
			chmod +x /usr/sbin/policy-rc.d; made_policy=1; \
		fi; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq -o DPkg::Lock::Timeout=300 >/dev/null \
		&& apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
			redis-server >/dev/null \
		|| echo "redis-bin: apt-get failed; Redis tests will skip"; \
		if [ -n "$$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	else \
		echo "redis-bin: redis-server not found. Install it with:"; \
		echo "  sudo apt-get install --no-install-recommends redis-server"; \
		echo "Redis tests will skip; make up starts the gateway with per-replica deduplication."; \
	fi

test: redis-bin
up: redis-bin
