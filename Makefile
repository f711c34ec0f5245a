SHELL := bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
UV := .venv/bin/uv
PROTO_OUT := libs/protos/src
PYTEST_ARGS ?=

help:             ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

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

lint: setup       ## ruff lint + format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: setup lint  ## Start Kafka + Mongo-wire server, run unit, integration and end-to-end tests
	@mkdir -p .tmp; $(PY) -m pytest --basetemp=.tmp/pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

run: setup        ## Start the local stack, run the sample evaluation, print its report
	$(PY) -m medbench_devstack.demo up

stop:             ## Stop what `make run` started
	$(PY) -m medbench_devstack.demo down

bench: setup      ## Benchmarks: metrics per core; 100k-item evaluation; 700k-item bank + rotation
	$(PY) -m tests.bench.bench_metrics
	$(PY) -m tests.bench.bench_upload
	$(PY) -m tests.bench.bench_dispatch
	$(PY) -m tests.bench.bench_bank

.PHONY: help setup protos lint test run stop bench
