# Two set-up commands for a fresh clone: `make demo` and `make test`.
# Everything they need (virtualenv, Python packages, Go builds) is installed by the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP_STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
EXTRAS ?= dev,serve,quantize

.PHONY: venv test test-fast e2e lint demo demo-down cluster cluster-down crds

$(PIP_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==25.3
	bash runtime-images/install-ml-deps.sh $(PY)
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(PIP_STAMP)

lint: venv
	$(VENV)/bin/ruff check .

# Every test: fast tests, runtime-image tests on CPU, e2e on the local control plane.
test: venv
	$(VENV)/bin/ruff check .
	bash hack/host-deps.sh
	e2e/cluster/build
	bash tests/engines/vllm_env.sh
	bash hack/checkov-env.sh >/dev/null
	bash hack/build-promtool.sh >/dev/null
	bash hack/build-registry.sh >/dev/null
	# Foundry Local's runtime (side venv: it pins another onnxruntime) to load exported artifacts in
	bash runtime-images/install-foundry-local.sh $(VENV)/bin/python >/dev/null
	# llama.cpp's llama-server (cached by version; minutes when the venv's llama-cpp-python libraries are linked)
	bash hack/images.sh llama-server-bin >/dev/null
	# its sources' flags, routes and metric names, which tests/test_engine_llamacpp.py checks ours against
	bash hack/images.sh llama-cpp-src >/dev/null
	SLM_E2E_DOWN=1 $(VENV)/bin/pytest -ra

test-fast: venv
	$(VENV)/bin/pytest -ra tests

crds: venv
	$(PY) -m slm_operator.crdgen > crds/slm.ai_slmdeployments.yaml

cluster:
	e2e/cluster/up

cluster-down:
	e2e/cluster/down

demo: venv
	bash hack/host-deps.sh
	bash hack/demo.sh

demo-down:
	bash hack/demo.sh down

# Container images, tagged as the chart and the operator default to (ghcr.io/slm-operator/...).
# SLM_BASE=debian builds the bases from Debian packages (no upstream pulls); SLM_IMAGES="a b"
# builds some only. Unchanged images are skipped. See hack/images.sh.
.PHONY: images images-push
images:
	bash hack/images.sh build

# Retag as $(REGISTRY)/slm-operator/<name>:<tag> and push; then install the chart with
# --set global.imageRegistry=$(REGISTRY).
images-push:
	@test -n "$(REGISTRY)" || { echo "usage: make images-push REGISTRY=registry.example:5000"; exit 2; }
	bash hack/images.sh build
	bash hack/images.sh push "$(REGISTRY)"

# Long forms of the fault and parity tests (not in `make test`): admission parity on 2,000 specs;
# 20 seeds of operator SIGKILLs (60 kills) on 50 converging SLMDeployments; 10 HA failovers;
# a 5-minute API server outage (on a private control plane).
.PHONY: chaos
chaos: venv
	SLM_PARITY_N=2000 $(VENV)/bin/pytest -ra e2e/test_admission_parity.py
	SLM_CHAOS_SEEDS=20 $(VENV)/bin/pytest -ra -s --timeout 7200 e2e/test_chaos_kill.py
	SLM_HA_KILLS=10 $(VENV)/bin/pytest -ra -s --timeout 3600 e2e/test_ha_failover.py
	SLM_OUTAGE_S=300 $(VENV)/bin/pytest -ra -s --timeout 1800 e2e/test_apiserver_outage.py

# Soak (not in `make test`): SOAK_MINUTES (60) of random SLMDeployment create/update/delete churn
# at 1 op/s on the local control plane, invariants every minute, the operator's RSS slope after
# the first 10 minutes (fails above SOAK_MAX_SLOPE_KB_PER_MIN, 100). See e2e/soak.py.
.PHONY: soak
soak: venv
	SOAK_MINUTES=$${SOAK_MINUTES:-60} $(VENV)/bin/python -m e2e.soak
