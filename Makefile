# Two entry points: `make run` (default study) and `make test`. Both build .venv from requirements.lock.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

$(STAMP): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/evgrid run default --out results/default

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/bench_day.py
	$(BIN)/python bench/bench_montecarlo.py
	$(BIN)/python bench/bench_milp.py
	$(BIN)/python bench/bench_dlmp.py
	$(BIN)/python bench/bench_estimation.py
	$(BIN)/python bench/bench_eho.py
	$(BIN)/python bench/bench_eho_vs_mealpy.py
	$(BIN)/python bench/bench_qubo_eva.py
	$(BIN)/python bench/bench_qubo_rtp.py

clean:
	rm -rf $(VENV) results
