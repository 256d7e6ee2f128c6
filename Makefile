# The two commands a newcomer needs: `make demo` and `make test` (both set up first).
PY := .venv/bin/python
SHELL := /bin/bash
export GLOG_minloglevel ?= 2

.PHONY: setup test demo bench caffe-check clean-runs

setup:
	bash caffe_build/setup.sh

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
