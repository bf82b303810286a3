# raynlp — two commands on a fresh machine:
#   make demo   create .venv, install everything, run the whole pipeline end to end
#   make test   create .venv, install everything, run the test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-slow lint format bench clean

install: $(VENV)/.installed

# torch first, pinned: its CPU wheel; a bare `torch` could pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	$(BIN)/python scripts/prebuild_ops.py
	touch $@

demo: install
	$(BIN)/raynlp demo

test: install
	$(BIN)/pytest

test-slow: install
	$(BIN)/pytest -m slow

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: install
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/inference_latency.py
	$(BIN)/python bench/accuracy.py --data-dir ../shared/data

clean:
	rm -rf runs .pytest_cache
