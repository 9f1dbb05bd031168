# One venv, installed from this project's own files. `make serve` and `make test` are the quick start.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# CompreFace's own SDK, for its compatibility tests: in a venv of its own (it needs urllib3<2; faceledger does not)
CF_VENV := .venv-compreface
CF_STAMP := $(CF_VENV)/.installed

.PHONY: setup serve test test-all bench lfw
setup: $(STAMP) $(CF_STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

$(CF_STAMP): tests/compreface/requirements.txt
	python3 -m venv $(CF_VENV)
	$(CF_VENV)/bin/python -m pip install --quiet -r tests/compreface/requirements.txt
	touch $(CF_STAMP)

serve: $(STAMP)
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
