# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The CPU build of torch: this pin is the wheel the build machines keep on disk;
# an unpinned `torch` would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: install demo test lint clean train-demo

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

# Reproduces the bundles shipped in assets/models/ (about 15 minutes each on a 2-core CPU).
RUNS := build/train
TRAIN_ARGS := --content assets/content --style assets/styles --vgg random:0 --preset demo --seed 0
train-demo: install
	rm -rf $(RUNS)/stvae-demo $(RUNS)/vqvae-demo
	mkdir -p assets/models
	$(PY) -m styleship train stvae $(TRAIN_ARGS) -o $(RUNS)/stvae-demo
	$(PY) -m styleship export $(RUNS)/stvae-demo/final -o assets/models/stvae-demo.stvae --force
	$(PY) -m styleship train vqvae $(TRAIN_ARGS) -o $(RUNS)/vqvae-demo
	$(PY) -m styleship export $(RUNS)/vqvae-demo/final -o assets/models/vqvae-demo.vqvae --force

lint: install
	$(VENV)/bin/ruff check styleship tests benchmarks
	$(VENV)/bin/ruff format --check styleship tests benchmarks

clean:
	rm -rf build .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
