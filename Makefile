# flatbook: two commands for a newcomer.
#   make book   set up .venv, get the offline data, execute every chapter (laptop profile), render HTML
#   make test   set up .venv, run the test suite
# Others: make setup | data | html | check-install | clean.   Variables: VENV (default .venv), PYTHON (python3), PROFILE.

SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PROFILE ?= laptop
PY := $(VENV)/bin/python
STAMP := $(VENV)/.flatbook-installed
PIP_VERSION := 26.3
FASHION_MNIST_DEB := /usr/share/datasets/fashion-mnist

.PHONY: book test html setup data check-install clean

book: setup data
	@start=$$(date +%s); \
	echo "== make book: executing every chapter at profile '$(PROFILE)' with papermill, then rendering HTML"; \
	$(PY) -m flatbook book --profile $(PROFILE) || exit $$?; \
	echo "== make book: done in $$(( $$(date +%s) - start )) s; open _build/html/index.html"

test: setup data
	@start=$$(date +%s); \
	echo "== make test: running pytest (unit, exact-reference, chapter execution at profile 'ci', HTML build)"; \
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
	echo "== make check-install: pip install . (no extras) into a fresh $(CLEAN_VENV), then tests/toolkit_example.py"; \
	rm -rf $(CLEAN_VENV) && $(PYTHON) -m venv $(CLEAN_VENV) || exit $$?; \
	$(CLEAN_VENV)/bin/python -m pip install --quiet --upgrade pip==$(PIP_VERSION) || exit $$?; \
	$(CLEAN_VENV)/bin/python -m pip install --quiet -c requirements.txt . || exit $$?; \
	example=$$(pwd)/tests/toolkit_example.py; \
	(cd $(CLEAN_VENV) && bin/python $$example) || exit $$?; \
	rm -rf $(CLEAN_VENV) build; \
	echo "== make check-install: done in $$(( $$(date +%s) - start )) s"

clean:
	rm -rf _build
