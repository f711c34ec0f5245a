SHELL := bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
UV := .venv/bin/uv
PROTO_OUT := libs/protos/src

help:             ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

.venv/.synced: pyproject.toml uv.lock $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)
	@test -x $(UV) || { python3 -m venv .venv && .venv/bin/pip install -q --disable-pip-version-check uv==0.13.9; }
	$(UV) sync --all-packages --frozen --inexact
	@touch $@

setup: .venv/.synced protos ## Create .venv, install every workspace member, generate protos

protos: .venv/.synced ## Generate Python from protos/ into libs/protos/src (gitignored)
	@rm -rf $(PROTO_OUT)/medbench/*/
	$(PY) -m grpc_tools.protoc -I protos --python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) \
	  --grpc_python_out=$(PROTO_OUT) $$(find protos -name '*.proto' | sort)
	@find $(PROTO_OUT)/medbench -mindepth 1 -type d -exec touch {}/__init__.py \;

.PHONY: help setup protos
