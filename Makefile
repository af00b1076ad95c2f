# Two entry points: `make run` (default study) and `make test`. Both build .venv from requirements.lock.
# The first Python 3.12 or 3.13 found (on PATH, then pyenv's versions); `make PY=/path/to/python3.12` overrides.
PY_CANDIDATES := python3.12 python3.13 $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3) \
	$(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3) python3
PY ?= $(shell for c in $(PY_CANDIDATES); do $$c -c 'import sys; sys.exit(not (3, 12) <= sys.version_info[:2] < (3, 14))' \
	2>/dev/null && { echo $$c; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint docs bench clean

$(STAMP): pyproject.toml requirements.lock
	@test ! -L $(VENV) || { echo "$(VENV) is a symlink (a shared venv): not rebuilding it, 'venv --clear' would empty" \
		"the venv it points to; rebuild it in its own tree, or 'touch $(STAMP)' there if it is current" >&2; exit 2; }
	@test -n "$(PY)" || { echo "evgrid needs Python 3.12 or 3.13 and found none (tried: $(PY_CANDIDATES));" \
		"install one (e.g. 'pyenv install 3.12') or run 'make PY=/path/to/python3.12'" >&2; exit 2; }
	@echo "building $(VENV) with $(PY) ($$($(PY) --version))"
	$(PY) -m venv --clear $(VENV)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/evgrid run default --out results/default

test: $(STAMP)
	$(BIN)/python -m pytest

# the inner loop: everything but the tests marked `slow` (685 of 865 tests, ~2–3 min on 2 quiet cores); `make test` is all
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# docs/schema.md is generated from sim/scenario.py's models (tests/test_schema_doc.py fails when it is stale)
docs: $(STAMP)
	$(BIN)/python -m experiments.schema_doc
	$(BIN)/mkdocs build --quiet

bench: $(STAMP)
	$(BIN)/python bench/bench_day.py
	$(BIN)/python bench/bench_powerflow.py
	$(BIN)/python bench/bench_montecarlo.py
	$(BIN)/python bench/bench_milp.py
	$(BIN)/python bench/bench_dlmp.py
	$(BIN)/python bench/bench_estimation.py
	$(BIN)/python bench/bench_eho.py
	$(BIN)/python bench/bench_eho_vs_mealpy.py
	$(BIN)/python bench/bench_qubo_eva.py
	$(BIN)/python bench/bench_qubo_rtp.py
	$(BIN)/python bench/bench_startup.py
	$(BIN)/python bench/bench_scaling.py
	$(BIN)/python bench/bench_year.py
	$(BIN)/python bench/summary.py

clean:
	rm -rf $(VENV) results
