# Redis: the gateway's shared record of scored prediction ids (feedback deduplication).
# The binary comes from Debian's redis-server; `make up` and the tests that need it start
# their own instance on 127.0.0.1 (scripts/stack.py, tests/fixtures/redis.py).

# Tests find the binary on PATH, or through REDIS_SERVER_BIN.

.PHONY: redis-bin

# As root, only when missing, and without starting a system Redis on :6379 (see the
# script). Never fails: without the binary the Redis tests skip with the command to run.
redis-bin: ## Install redis-server (apt-get, when root)
	@scripts/apt-install-missing.sh redis-bin redis-server redis-server \
		"The tests that need it will skip; make up starts the stack without it."

test: redis-bin
up: redis-bin
