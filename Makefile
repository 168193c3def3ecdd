# Quickstart: `make demo` (whole graph on the embedded default), `make test`.
# Every target installs what it needs into .venv first, from nothing.

VENV        ?= .venv
PYTHON      ?= python3
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
STAMP       := $(VENV)/.installed
# torch is installed before the project so pip never resolves it freely:
# on a machine without an NVIDIA GPU it is the CPU build (set TORCH_INDEX_URL
# to PyTorch's CPU index where the registry serves CUDA builds by default);
# with a GPU it is the registry's default CUDA build.
TORCH_VERSION   ?= 2.13.0
TORCH_INDEX_URL ?=
HAS_GPU     := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export DAGSTER_HOME
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: install demo test dev clean bench

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
ifeq ($(HAS_GPU),1)
	$(PIP) install -q "torch==$(TORCH_VERSION)"
else
	$(PIP) install -q "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL) --extra-index-url https://pypi.org/simple)
endif
	# Pin the torch just installed so resolving the project never swaps it.
	$(PY) -c "import torch; print('torch==' + torch.__version__)" > $(VENV)/torch-constraint.txt
	$(PIP) install -c $(VENV)/torch-constraint.txt -e ".[dev]"
	touch $(STAMP)

demo: install
	mkdir -p $(DAGSTER_HOME)
	$(PY) -m llm_assets.demo

# Two workers, one test file at a time each (module fixtures such as dagster dev stay in one process);
# files with slow tests are collected first (tests/conftest.py) so the longest one never starts last.
TEST_WORKERS ?= 2
test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# Benchmarks (not tests): project vs baseline tables, then one JSON line of key figures.
bench: install
	HF_HUB_OFFLINE=1 $(PY) bench/run_all.py $(BENCH_ARGS)

dev: install
	mkdir -p $(DAGSTER_HOME)
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf artifacts .dagster_home .pytest_cache
