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
# llama-cpp-python has no wheel for CPUs: it is compiled here with the flags that
# deploy/llama_cpp/cmake-args.sh prints (never -march=native), once per version and flags,
# into a folder named by both, so pip's own wheel cache can never hand back a wheel built
# with other flags on another machine.
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_CMAKE_ARGS  ?= $(shell sh deploy/llama_cpp/cmake-args.sh)
LLAMA_WHEEL_DIR   ?= $(HOME)/.cache/llm-assets/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(shell printf '%s' "$(LLAMA_CMAKE_ARGS)" | sha256sum | cut -c1-12)
DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export DAGSTER_HOME
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: install demo test dev clean bench llama-cpp-wheel

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
	$(MAKE) llama-cpp-wheel
	$(PIP) install $(LLAMA_WHEEL_DIR)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(PIP) install -c $(VENV)/torch-constraint.txt -e ".[dev]"
	touch $(STAMP)

llama-cpp-wheel:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	ls $(LLAMA_WHEEL_DIR)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || { \
	    echo "building llama-cpp-python $(LLAMA_CPP_VERSION) with CMAKE_ARGS=$(LLAMA_CMAKE_ARGS) (minutes)"; \
	    CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel -q --no-cache-dir --no-deps \
	        -w $(LLAMA_WHEEL_DIR).tmp "llama-cpp-python==$(LLAMA_CPP_VERSION)" \
	    && mv $(LLAMA_WHEEL_DIR).tmp $(LLAMA_WHEEL_DIR); }

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
