# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The CPU build of torch: this pin is the wheel the build machines keep on disk;
# an unpinned `torch` would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[cpu,torch,dev]"
	touch $(STAMP)

demo: install
	$(PY) -m styleship demo --out build/demo

test: install
	$(PY) -m pytest -q
	$(MAKE) lint

lint: install
	$(VENV)/bin/ruff check styleship tests benchmarks
	$(VENV)/bin/ruff format --check styleship tests benchmarks

clean:
	rm -rf build .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
