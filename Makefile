# Two commands on a fresh machine: `make demo` and `make test`. Each sets up what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch/torchvision first, pinned to the builds on this machine's disk (a plain `torch` would pull a CUDA build from PyPI).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test setup system-deps clean

demo: $(STAMP)
	$(VENV)/bin/studio demo

# -n auto: one pytest-xdist worker per core; --cov: line coverage of studio/ and generators/, CLI subprocesses included
test: $(STAMP) system-deps
	$(VENV)/bin/pytest -n auto --dist loadscope --no-loadscope-reorder --cov --cov-report=term-missing:skip-covered --cov-fail-under=90

setup: $(STAMP)

# the launcher extras too: tests/test_launchers.py runs real submitit jobs and a real local Ray cluster
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev,slurm,ray]'
	touch $@

# Debian packages the tests use for real (Fashion-MNIST files; chromium + chromedriver for the gallery test). Installed only when missing.
system-deps:
	@./scripts/system-deps.sh

clean:
	rm -rf $(VENV) outputs .pytest_cache
