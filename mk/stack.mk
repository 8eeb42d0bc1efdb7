# The local stack: model server + gateway as background processes (scripts/stack.py).
# Logs and pids go in $(RUN_DIR); Prometheus and the Pushgateway join when installed.

STACK := $(PY) scripts/stack.py --run-dir $(RUN_DIR) --model-repository $(MODEL_REPOSITORY) \
	--model-name $(MODEL_NAME)

.PHONY: up down status

up: install ## Start the local stack in the background, wait for /readyz, print the URLs
	$(STACK) up

down: ## Stop what make up started
	$(STACK) down

status: ## Show which local-stack processes run and are ready
	$(STACK) status
