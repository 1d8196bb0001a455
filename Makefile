# The two commands: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch first, pinned: this pair lies on this machine's disk and runs on the CPU. Never pair
# torch 2.13.0 with PyPI's torchvision (it fails to import and breaks transformers).
TORCH := torch==2.14.1 torchvision==0.29.1

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip on this machine warns once per package about an index folder it skips: keep the log readable.
FILTER_PIP := 2>&1 | { grep -v '^WARNING: Location' || true; }

.PHONY: demo test test-slow lock clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH) $(FILTER_PIP)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]' $(FILTER_PIP)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/deepeyes demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lock: $(STAMP)
	{ echo "# Exact versions for reproducible installs (pip install -c constraints.txt -e .)."; \
	  echo "# Checked together on Python 3.11, CPU. Regenerate with: make lock"; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^-e'; } > constraints.txt

clean:
	rm -rf runs .pytest_cache
