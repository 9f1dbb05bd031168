# One venv, installed from this project's own files. `make serve` and `make test` are the quick start.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup serve test test-all bench lfw
setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

serve: setup
	$(VENV)/bin/faceledger serve

# quick run: skips tests marked slow (pyproject addopts: -m "not slow")
test: setup
	$(PY) -m pytest

# everything, slow tests included (CI)
test-all: setup
	$(PY) -m pytest -m "slow or not slow"

bench: setup
	$(PY) -m pip install --quiet --no-deps "face_recognition>=1.3"
	$(PY) benchmarks/bench_engine.py

lfw: setup
	$(VENV)/bin/faceledger eval lfw --profile fast
	$(VENV)/bin/faceledger eval lfw --profile accurate --ablation
