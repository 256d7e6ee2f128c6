# The two commands a newcomer needs: `make demo` and `make test` (both set up first).
PY := .venv/bin/python
SHELL := /bin/bash
export GLOG_minloglevel ?= 2

.PHONY: setup lint test demo bench caffe-check clean-runs

setup:
	bash caffe_build/setup.sh

# The gate CI runs before the tests: ruff's lint and format check, mypy (config in pyproject.toml).
lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

# Our tests, then BVLC's own pycaffe suite against the built pycaffe (the build's acceptance check).
test: setup
	cd "$$(cat .venv/caffe-dir)/src/python" && "$(CURDIR)/$(PY)" -m pytest -q -p no:cacheprovider caffe/test
	$(PY) -m pytest tests

demo: setup
	test -f data/synth/train.txt || $(PY) -m orchestrator.cli data synth --out data/synth
	$(PY) -m orchestrator.cli run experiments/demo.yaml --run-dir runs/demo --fresh

bench: setup
	$(PY) bench/run_all.py

# BVLC's C++ suite (CPU tests): compiled once into the cached build, then run.
caffe-check: setup
	bash caffe_build/caffe_check.sh

clean-runs:
	rm -rf runs

# The portable runtime (README, "GPU runtime bundle"): build/segorch-$(BUNDLE_VARIANT)-bundle.tar.gz.
# BUNDLE_VARIANT=gpu (default: Caffe with CUDA, ~20 min cold) or cpu (the same packaging, CI's check).
BUNDLE_VARIANT ?= gpu
.PHONY: gpu-bundle gpu-bundle-check
gpu-bundle: setup
	bash caffe_build/bundle/build_bundle.sh $(BUNDLE_VARIANT)

# Unpacks it into a fresh folder; orchestrate --version and 50 demo iterations under env -i; ldd.
gpu-bundle-check: gpu-bundle
	$(PY) caffe_build/bundle/check_bundle.py build/segorch-$(BUNDLE_VARIANT)-bundle.tar.gz
