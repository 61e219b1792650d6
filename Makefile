# inferfleet — the front door. `make help` lists the targets.
#
# Fresh machine: `make demo` and `make test` install everything they need
# (a .venv with pinned torch/torchvision, and for tests the system packages:
# podman, runc, debootstrap, postgresql).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
AGENT  := $(VENV)/bin/agent
export PATH := $(abspath $(VENV))/bin:$(PATH)

# Fleet settings (cloud, node count, versions, collector) live in fleet.env;
# secrets (GENESISCLOUD_TOKEN, AWS_*, INFERFLEET_COLLECTOR_TOKEN) come from the environment.
-include fleet.env

DEMO_MODELS ?= resnet18,mobilenet_v3_small,squeezenet1_1
DEMO_OUT    ?= out/demo

.PHONY: help venv system-deps test test-python demo bench-local bench-serving bench-fleet \
        molecule e2e lint provision configure bench report destroy clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-16s %s\n",$$1,$$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[collector,infra,dev]'
	touch $@

venv: $(VENV)/.installed ## create .venv with everything (torch==2.14.1, torchvision==0.29.1, ...)

system-deps: ## install podman, runc, debootstrap, postgresql (apt; needs root)
	bash scripts/system-deps.sh

test: venv system-deps ## the whole test suite (what CI runs)
	$(PY) -m pytest tests

demo: venv ## build, verify and benchmark a few small models on this machine
	$(AGENT) build-engines --models $(DEMO_MODELS) --out $(DEMO_OUT)/engines
	$(AGENT) bench --models $(DEMO_MODELS) --engines $(DEMO_OUT)/engines --batch-sizes 1,8 --json $(DEMO_OUT)/bench.json

bench-local: venv ## speedup of the best engine over eager (resnet18/50, mobilenet_v3_small, squeezenet1_1)
	$(PY) benchmarks/bench_local.py

clean: ## remove build outputs (not .venv)
	rm -rf out engines .pytest_cache
