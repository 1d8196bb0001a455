# The two commands: `make demo` and `make test`. Each creates .venv when missing.
# `make test-vllm` runs the tests against a real vLLM server, from its own environment (`make vllm-env`).
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

# vLLM's own environment (its pins exclude Prefect's): never .venv. scripts/vllm-env.sh says what it installs.
VLLM_VENV ?= .venv-vllm

.PHONY: demo test test-slow test-vllm vllm-env bench lock clean bwrap

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH) $(FILTER_PIP)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]' $(FILTER_PIP)
	touch $(STAMP)

# The Python sandbox needs bubblewrap (Debian's package). Installed when missing and we are root;
# otherwise the sandbox refuses to start and says how to install it.
bwrap:
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -qq bubblewrap >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq bubblewrap; }; }; } || \
	  echo "warning: bubblewrap (bwrap) is not installed; the Python sandbox will refuse to start"

demo: $(STAMP) bwrap
	$(VENV)/bin/deepeyes demo

test: $(STAMP) bwrap
	$(PY) -m pytest -q --durations=25  # the slowest tests, against the 25-minute budget

test-slow: $(STAMP) bwrap
	$(PY) -m pytest -q -m slow

# Idempotent: a finished install is kept (CPU build here; VLLM_TARGET=cuda for the GPU build).
vllm-env:
	bash scripts/vllm-env.sh $(VLLM_VENV)

# The tests marked `vllm`: they start `vllm serve` from $(VLLM_VENV) themselves and stop it at the end.
test-vllm: $(STAMP) bwrap vllm-env
	DEEPEYES_VLLM_ENV=$(abspath $(VLLM_VENV)) $(PY) -m pytest -q -m vllm

# The speed checks: each prints its ratio against a baseline measured in the same run.
# bench.dedup compares against datatrove, a dev dependency (the `bench` extra).
bench: $(STAMP) bwrap
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[bench]' $(FILTER_PIP)
	for b in shards sandbox search dedup synth; do $(PY) -m bench.$$b --json || exit 1; done

lock: $(STAMP)
	{ echo "# Exact versions for reproducible installs (pip install -c constraints.txt -e .)."; \
	  echo "# Checked together on Python 3.11, CPU. Regenerate with: make lock"; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^-e'; } > constraints.txt

clean:
	rm -rf runs .pytest_cache
