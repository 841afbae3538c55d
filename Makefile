# flatbook: two commands for a newcomer.
#   make book   set up .venv, get the offline data, execute every chapter (laptop profile), render HTML
#   make test   set up .venv, run the test suite
# Others: make setup | data | html | check-install | check-torch-oldest | gpu-bundle | clean.   Variables: VENV (default .venv), PYTHON (python3), PROFILE.

SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PROFILE ?= laptop
PY := $(VENV)/bin/python
STAMP := $(VENV)/.flatbook-installed
PIP_VERSION := 26.3
FASHION_MNIST_DEB := /usr/share/datasets/fashion-mnist

.PHONY: book test html setup data check-install check-torch-oldest gpu-bundle clean

book: setup data
	@start=$$(date +%s); \
	echo "== make book: executing every chapter at profile '$(PROFILE)' with papermill, then rendering HTML"; \
	$(PY) -m flatbook book --profile $(PROFILE) || exit $$?; \
	echo "== make book: done in $$(( $$(date +%s) - start )) s; open _build/html/index.html"

test: setup data
	@start=$$(date +%s); \
	echo "== make test: running pytest (unit, exact-reference, chapter execution at profile 'ci', HTML build)"; \
	$(PY) -m ruff check flatbook tests benchmarks || exit $$?; \
	$(PY) -m pytest -q $(PYTEST_ARGS) || exit $$?; \
	echo "== make test: done in $$(( $$(date +%s) - start )) s"

html: setup
	@start=$$(date +%s); \
	echo "== make html: rendering _build/executed/*.ipynb into _build/html (no execution)"; \
	$(PY) -m flatbook html || exit $$?; \
	echo "== make html: done in $$(( $$(date +%s) - start )) s"

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@start=$$(date +%s); \
	echo "== make setup: virtual environment $(VENV) with requirements.txt and flatbook (editable)"; \
	$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v == (3, 11) else print(f"warning: $(PYTHON) is Python {v[0]}.{v[1]}; flatbook pins are tested on 3.11 (make PYTHON=python3.11)"))' ; \
	if ! $(PY) -m pip --version >/dev/null 2>&1; then \
		rm -rf $(VENV); \
		$(PYTHON) -m venv $(VENV) || { echo "error: '$(PYTHON) -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv"; exit 1; }; \
	fi; \
	$(PY) -m pip install --quiet --upgrade pip==$(PIP_VERSION) || exit $$?; \
	$(PY) -m pip install --quiet -r requirements.txt || exit $$?; \
	$(PY) -m pip install --quiet --no-deps -e . || exit $$?; \
	$(PY) -m pip check || exit $$?; \
	touch $(STAMP); \
	echo "== make setup: done in $$(( $$(date +%s) - start )) s"

# Fashion-MNIST offline: Debian's dataset-fashion-mnist package puts the original IDX files in
# /usr/share/datasets/fashion-mnist. Where apt cannot install it, torchvision downloads the files
# on first use (set FLATBOOK_DATA to choose where).
data:
	@start=$$(date +%s); \
	if [ -d $(FASHION_MNIST_DEB) ]; then \
		echo "== make data: Fashion-MNIST found in $(FASHION_MNIST_DEB)"; \
	elif command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then \
		echo "== make data: installing Debian's dataset-fashion-mnist (Fashion-MNIST, offline)"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null \
		|| { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
		|| echo "== make data: apt could not install it; torchvision will download Fashion-MNIST on first use"; \
	else \
		echo "== make data: no apt here; torchvision will download Fashion-MNIST on first use"; \
	fi; \
	echo "== make data: done in $$(( $$(date +%s) - start )) s"

# `pip install .` (no extras) into a fresh virtual environment, then the toolkit example from outside
# the source tree: the toolkit must work with its core dependencies alone (torch, numpy, scipy, tqdm).
CLEAN_VENV ?= _build/clean-venv
check-install:
	@start=$$(date +%s); \
	echo "== make check-install: pip install . (no extras) into a fresh $(CLEAN_VENV), then tests/toolkit/toolkit_example.py"; \
	rm -rf $(CLEAN_VENV) && $(PYTHON) -m venv $(CLEAN_VENV) || exit $$?; \
	$(CLEAN_VENV)/bin/python -m pip install --quiet --upgrade pip==$(PIP_VERSION) || exit $$?; \
	$(CLEAN_VENV)/bin/python -m pip install --quiet -c requirements.txt . || exit $$?; \
	example=$$(pwd)/tests/toolkit/toolkit_example.py; \
	(cd $(CLEAN_VENV) && bin/python $$example) || exit $$?; \
	rm -rf $(CLEAN_VENV) build; \
	echo "== make check-install: done in $$(( $$(date +%s) - start )) s"

# What benchmarks/gpu_check.py needs on the GPU machine that its image lacks (it has torch, numpy,
# scipy, pandas, matplotlib, seaborn, sympy, tqdm, PyYAML and pytest, and no network): the wheels of
# papermill, nbformat, ipykernel and tabulate with their dependencies (at requirements.txt's pins,
# for CPython 3.12 on x86-64 Linux) and Fashion-MNIST's four gzipped files, in one git-ignored
# folder to copy along with the source tree; there: python3 benchmarks/gpu_check.py --bundle gpu_bundle.
GPU_BUNDLE ?= gpu_bundle
GPU_PYTHON_VERSION ?= 3.12
gpu-bundle: setup data
	@start=$$(date +%s); \
	echo "== make gpu-bundle: wheels for Python $(GPU_PYTHON_VERSION) and Fashion-MNIST into $(GPU_BUNDLE)/"; \
	rm -rf $(GPU_BUNDLE) && mkdir -p $(GPU_BUNDLE)/wheels $(GPU_BUNDLE)/fashion-mnist || exit $$?; \
	grep -E '^(papermill|nbformat|nbclient|ipykernel|ipython|tabulate)==' requirements.txt > $(GPU_BUNDLE)/wanted.txt; \
	$(PY) -m pip download --quiet --dest $(GPU_BUNDLE)/wheels --only-binary=:all: --implementation cp \
		--python-version $(GPU_PYTHON_VERSION) --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -r $(GPU_BUNDLE)/wanted.txt || exit $$?; \
	cp $(FASHION_MNIST_DEB)/*-ubyte.gz $(GPU_BUNDLE)/fashion-mnist/ || exit $$?; \
	echo "== make gpu-bundle: $$(ls $(GPU_BUNDLE)/wheels | wc -l) wheels, $$(du -sh $(GPU_BUNDLE) | cut -f1) in all, done in $$(( $$(date +%s) - start )) s"

# The oldest supported PyTorch, as the GPU machine has it: a venv with torch 2.11.0 / torchvision
# 0.26.0 and only the packages that machine's image has (no nbformat, papermill or Jupyter Book), the
# source on PYTHONPATH (not installed, as there); then the toolkit's and the distributed tests, and
# the dry run of benchmarks/gpu_check.py on the CPU. Other packages at requirements.txt's pins.
OLDEST_VENV ?= _build/torch-oldest-venv
OLDEST_TORCH := torch==2.11.0 torchvision==0.26.0
IMAGE_PACKAGES := numpy scipy pandas matplotlib seaborn sympy mpmath tqdm PyYAML pytest
OLDEST_TESTS := tests/toolkit/test_gpu_paths.py tests/toolkit/test_curvature.py tests/toolkit/test_spectrum.py tests/toolkit/test_train.py \
	tests/toolkit/test_models.py tests/toolkit/test_batching.py tests/toolkit/test_scale_measures.py tests/toolkit/test_checks.py \
	tests/toolkit/test_schedules.py tests/toolkit/test_distributed.py
check-torch-oldest:
	@start=$$(date +%s); \
	echo "== make check-torch-oldest: $(OLDEST_TORCH) in $(OLDEST_VENV), the toolkit and distributed tests, gpu_check's CPU dry run"; \
	rm -rf $(OLDEST_VENV) && $(PYTHON) -m venv $(OLDEST_VENV) || exit $$?; \
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip==$(PIP_VERSION) || exit $$?; \
	grep -v -E '^(torch|torchvision)==' requirements.txt > $(OLDEST_VENV)/pins.txt; \
	$(OLDEST_VENV)/bin/python -m pip install --quiet -c $(OLDEST_VENV)/pins.txt $(OLDEST_TORCH) $(IMAGE_PACKAGES) || exit $$?; \
	$(OLDEST_VENV)/bin/python -c 'import torch; print("== make check-torch-oldest: torch", torch.__version__)'; \
	PYTHONPATH=$$(pwd) $(OLDEST_VENV)/bin/python -m pytest -q -p no:cacheprovider $(OLDEST_TESTS) || exit $$?; \
	PYTHONPATH=$$(pwd) $(OLDEST_VENV)/bin/python benchmarks/gpu_check.py --device cpu --quick \
		--time-scale 4 --out $(OLDEST_VENV)/gpu_check_cpu || exit $$?; \
	rm -rf $(OLDEST_VENV); \
	echo "== make check-torch-oldest: done in $$(( $$(date +%s) - start )) s"

clean:
	rm -rf _build
