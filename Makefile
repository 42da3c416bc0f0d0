# imgpack: `make demo` and `make test` do all the set-up on a fresh machine (Python 3.10+).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SHARED ?= ../shared
DEMO_OUT := build/demo

.PHONY: demo test lint docs compile bench clean help

help:
	@echo "make demo   create $(VENV), install imgpack, convert sample_data/ to HDF5, inspect and verify it, draw a preview"
	@echo "make test   install the test dependencies (TensorFlow, pyspark, and MosaicML Streaming in $(VENV)/streaming), run ruff, mypy and the test suite"
	@echo "make docs   build the documentation site (mkdocs, --strict) into build/site/"
	@echo "make bench  install the benchmark extra and print the throughput, scaling, APTOS, --update, object-store, memory, reduced-decoding, repack, statistics, near-duplicate search, worker and million-image tables"
	@echo "make clean  remove $(VENV), build/ and caches"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

# PyTorch's CPU build first (the reading API's DataLoader test needs no GPU): the test extra's torch is then
# installed already, and none of the CUDA build's 3.4 GB (nvidia-*, triton) comes with it. TensorFlow's and
# PyTorch's C++ headers (490 MB) are for building extensions, which the tests do not: removed. A fresh
# .venv is then 3.5 GB (7.7 GB before).
TORCH_CPU := torch==2.13.0+cpu
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet '$(TORCH_CPU)' 2>/dev/null || \
	  $(BIN)/python -m pip install --quiet --extra-index-url https://download.pytorch.org/whl/cpu '$(TORCH_CPU)'
	$(BIN)/python -m pip install --quiet -e '.[test,tfrecord,spark,parquet]'
	rm -rf $(VENV)/lib/python*/site-packages/tensorflow/include $(VENV)/lib/python*/site-packages/torch/include
	@touch $@ $(VENV)/.installed

# MosaicML Streaming, the MDS output's reader in the tests, in an environment of its own: it pins transformers < 5,
# and with it huggingface-hub < 1, which the test environment's datasets (5.x) refuses. CPU torch first, as above.
STREAMING := $(VENV)/streaming
$(STREAMING)/.installed: | $(BIN)/python
	$(PYTHON) -m venv $(STREAMING)
	$(STREAMING)/bin/python -m pip install --quiet '$(TORCH_CPU)' 2>/dev/null || \
	  $(STREAMING)/bin/python -m pip install --quiet --extra-index-url https://download.pytorch.org/whl/cpu '$(TORCH_CPU)'
	$(STREAMING)/bin/python -m pip install --quiet mosaicml-streaming pillow 'torch==2.13.0'
	rm -rf $(STREAMING)/lib/python*/site-packages/torch/include
	@touch $@

# (LitData, for bench_repack.py, needs PyTorch: its CPU build first, as for the tests)
$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet '$(TORCH_CPU)' 2>/dev/null || \
	  $(BIN)/python -m pip install --quiet --extra-index-url https://download.pytorch.org/whl/cpu '$(TORCH_CPU)'
	$(BIN)/python -m pip install --quiet -e '.[bench,tfrecord,parquet]'
	@touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/imgpack convert sample_data -o $(DEMO_OUT)/sample_data.h5 --size 128 --overwrite
	$(BIN)/imgpack inspect $(DEMO_OUT)/sample_data.h5 --verify --preview $(DEMO_OUT)/preview.png

lint: $(VENV)/.installed-test
	$(BIN)/ruff check imgpack tests benchmarks sample_data
	$(BIN)/mypy imgpack

docs: $(VENV)/.installed-test
	$(BIN)/mkdocs build --strict --quiet

# imgpack's bytecode, as an installed package has it: an editable install where
# PYTHONDONTWRITEBYTECODE is set (CI, containers) would compile every module in every process
compile: | $(BIN)/python
	$(BIN)/python -m compileall -q imgpack

test: lint docs compile $(STREAMING)/.installed
	IMGPACK_SHARED=$(SHARED) $(BIN)/python -m pytest

bench: $(VENV)/.installed-bench compile
	$(BIN)/python benchmarks/bench_throughput.py
	$(BIN)/python benchmarks/bench_update.py
	$(BIN)/python benchmarks/bench_store.py
	$(BIN)/python benchmarks/bench_convert.py
	$(BIN)/python benchmarks/bench_decode.py -n 1000
	$(BIN)/python benchmarks/bench_repack.py
	$(BIN)/python benchmarks/bench_stats.py
	$(BIN)/python benchmarks/bench_stats.py --profile tiny --size 64 -n 10000
	$(BIN)/python benchmarks/bench_near.py
	$(BIN)/python benchmarks/bench_worker.py
	$(BIN)/python benchmarks/bench_million.py

clean:
	rm -rf $(VENV) build bench-out .pytest_cache .mypy_cache .ruff_cache *.egg-info
