# One task runner for people and CI. Each target builds its own virtual environment.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,spark]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m kequn.demo

test: $(STAMP)
	$(BIN)/ruff check kequn tests bench
	$(BIN)/ruff format --check kequn tests bench
	sh scripts/ensure-chromium.sh && OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check kequn tests bench
	$(BIN)/ruff format --check kequn tests bench

format: $(STAMP)
	$(BIN)/ruff format kequn tests bench
	$(BIN)/ruff check --fix kequn tests bench

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/import_orders.py
	$(BIN)/python bench/rfm.py
	$(BIN)/python bench/clv.py
	$(BIN)/python bench/cluster.py
	$(BIN)/python bench/segments.py --scale 0.1

clean:
	rm -rf $(VENV) demo-output .pytest_cache
