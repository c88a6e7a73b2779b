# Every target that needs the venv creates it when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(wildcard proto/daemon/rpc/v1/*.proto)
PROTOC = $(PY) -m grpc_tools.protoc -Iproto --plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy \
	--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc

.PHONY: setup proto check-proto lint typecheck test demo bench image clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

proto: $(STAMP)
	$(PROTOC) --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. $(PROTOS)

# Regenerates into a scratch dir and fails when the committed stubs differ.
check-proto: $(STAMP)
	@tmp=$$(mktemp -d) && \
	$(PROTOC) --python_out=$$tmp --grpc_python_out=$$tmp --mypy_out=$$tmp --mypy_grpc_out=$$tmp $(PROTOS) && \
	if diff -r -x __init__.py -x __pycache__ $$tmp/daemon/rpc/v1 daemon/rpc/v1 >/dev/null; then \
		echo "generated stubs are up to date"; rm -rf $$tmp; \
	else \
		diff -r -x __init__.py -x __pycache__ $$tmp/daemon/rpc/v1 daemon/rpc/v1 | head -40; rm -rf $$tmp; \
		echo "stubs in daemon/rpc/v1 are stale: run 'make proto' and commit the result" >&2; exit 1; \
	fi

lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/node demo

# `make bench BENCH=idle_rss` runs one benchmark alone.
bench: $(STAMP)
	$(PY) -m benchmarks $(BENCH)

# The built-in worker image (python3 + numpy), built offline from Debian packages.
image:
	bash images/worker/build.sh vcnode/worker:1

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
