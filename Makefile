# The single entry point. `make run` and `make test` build everything they need
# from nothing: a virtual environment in .venv with the project installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Sentinels: reinstall only when pyproject.toml changes.
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev
STAMP_BENCH := $(VENV)/.installed-bench
# Debian's Chromium (the dashboard's test) and redis-server (the Redis backends' tests).
STAMP_SERVICES := $(VENV)/.installed-services

.PHONY: run test lint typecheck pytest test-debug bench bench-pytest install clean

run: $(STAMP_RUN)
	$(BIN)/asyncperf simulate

test: lint pytest

lint: $(STAMP_DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

pytest: $(STAMP_DEV) $(STAMP_SERVICES)
	$(BIN)/pytest
	# One pass with asyncio's debug mode over the core suites (slow callbacks,
	# never-awaited coroutines and non-thread-safe calls become visible).
	PYTHONASYNCIODEBUG=1 $(BIN)/pytest -q tests/test_pool.py tests/test_queue.py tests/test_queue_shedding.py \
		tests/test_pool_properties.py tests/test_limiter.py tests/test_rate.py \
		tests/test_cache_memory.py tests/test_cache_tiered.py tests/test_cache_disk.py \
		tests/test_supervisor.py tests/test_handler.py tests/test_runtime.py \
		tests/test_batcher.py tests/test_files.py tests/test_runtime_batch.py
	# The named pytest-benchmark benchmarks, each run once at a small size as a
	# correctness test (`make bench-pytest` times them).
	$(BIN)/pytest -q -p no:cacheprovider bench --benchmark-disable

bench: $(STAMP_BENCH)
	$(BIN)/asyncperf bench all --loop both --json bench/results/latest.json
	$(MAKE) bench-pytest

bench-pytest: $(STAMP_BENCH)
	$(BIN)/pytest -p no:cacheprovider bench --benchmark-only --benchmark-json bench/results/pytest-benchmark.json

install: $(STAMP_DEV)

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "asyncperf needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): $(VENV)/bin/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[charts]'
	touch $@

$(STAMP_DEV): $(VENV)/bin/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,peers,charts]'
	touch $@ $(STAMP_RUN)

$(STAMP_BENCH): $(STAMP_DEV)
	touch $@

$(STAMP_SERVICES): scripts/install-test-services.sh | $(VENV)/bin/python
	./scripts/install-test-services.sh
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
