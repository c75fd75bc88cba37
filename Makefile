# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# torch is installed first and pinned to the local CPU build, so that nothing pulls the CUDA wheels;
# deepspeed builds against that torch, hence --no-build-isolation after it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
STAMP := $(VENV)/.relfm-installed

.PHONY: setup demo test lint typecheck unit clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-build-isolation "deepspeed>=0.16"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/relfm run jobs/demo/nightly.yaml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

unit: $(STAMP)
	$(BIN)/python -m pytest -m unit -q

clean:
	rm -rf .relfm .pytest_cache .mypy_cache .ruff_cache
