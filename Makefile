# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO ?= runs/demo

.PHONY: setup data test demo demo-train demo-eval demo-seg routing flexi bench lint clean

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP) data

data:
	@bash scripts/ensure_fashion_mnist.sh

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n 2 --dist loadgroup --durations=15 tests

# MSPE on the shipped Fashion-MNIST ViT (labels), the label-free variant, then the sweep.
demo: setup
	$(PY) train.py --config configs/fashion_mnist_mspe.py --workdir $(DEMO)
	$(PY) train.py --config configs/fashion_mnist_mspe_distill.py --workdir $(DEMO)_distill
	$(PY) eval.py --config configs/fashion_mnist_eval.py --workdir $(DEMO) \
	  --config.compare.mspe_distill=$(DEMO)_distill

# Segmentation (the paper's Table 2 on the offline canvas testbed): MSPE with labels and
# label-free on the shipped SETR-Naive segmenter, then the sweep (mIoU, mAcc, F1, masks.png).
demo-seg: setup
	$(PY) train.py --config configs/fashion_mnist_seg_mspe.py --workdir $(DEMO)_seg
	$(PY) train.py --config configs/fashion_mnist_seg_mspe_distill.py --workdir $(DEMO)_seg_distill
	$(PY) eval.py --config configs/fashion_mnist_seg_eval.py --workdir $(DEMO)_seg \
	  --config.compare.mspe_distill=$(DEMO)_seg_distill

# Which kernel serves a non-square input: each routing rule on the 5,000 held-out training
# images (after `make demo`; 34 minutes measured on 2 cores shared with another run).
routing: setup
	$(PY) eval.py --config configs/fashion_mnist_routing.py --workdir $(DEMO) \
	  --out_dir $(DEMO)/routing

# FlexiViT vs MSPE (after `make demo`): MSPE trained on top of the shipped FlexiViT, then the
# square sweep with the real FlexiViT row and FlexiViT's patch-size sweep.
flexi: setup
	$(PY) train.py --config configs/fashion_mnist_mspe.py --workdir $(DEMO)_flexi_mspe \
	  --config.init_file=assets/fashion_mnist_flexivit.npz
	$(PY) eval.py --config configs/fashion_mnist_flexi_eval.py --workdir $(DEMO)_flexi_mspe \
	  --config.compare.mspe=$(DEMO)

bench: setup
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m bench.run

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) runs
