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
	e2e/cluster/build
	bash tests/engines/vllm_env.sh
	bash hack/checkov-env.sh >/dev/null
	bash hack/build-promtool.sh >/dev/null
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
	bash hack/demo.sh

demo-down:
	bash hack/demo.sh down
