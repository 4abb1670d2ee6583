# cupid-airflow: `make demo` and `make test` are the two commands a new user needs.
# Installs are pinned by constraints.txt (regenerate with `make lock` after changing pyproject.toml).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
UV_VERSION := 0.13.9
PYTEST_ARGS ?=

.PHONY: install demo test lint lock bench-parse bench-scan bench-callback bench-latency bench-reconcile bench-fleet bench-dag-processor bench-celery bench-view bench-lag bench-repair screenshot clean

$(VENV)/.installed: pyproject.toml constraints.txt scripts/build_deps.py
	$(PYTHON) scripts/build_deps.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) pip install --quiet --python $(PY) --constraint constraints.txt --editable ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m cupid_airflow demo

lint: install
	$(VENV)/bin/ruff check cupid_airflow tests bench dags examples docs scripts
	$(VENV)/bin/ruff format --check cupid_airflow tests bench dags examples docs scripts
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

lock: install
	$(UV) pip compile --quiet pyproject.toml --extra test --extra postgres --python $(PY) --output-file constraints.txt

bench-parse: install
	$(PY) bench/parse_time.py

bench-scan: install
	$(PY) bench/scan_compare.py

bench-callback: install
	$(PY) bench/callback_delivery.py

bench-latency: install
	$(PY) bench/latency.py

bench-reconcile: install
	$(PY) bench/reconcile.py

bench-fleet: install
	$(PY) bench/fleet.py

bench-dag-processor: install
	$(PY) bench/dag_processor.py --pickup

bench-celery: install
	$(PY) bench/celery_scale.py

bench-view: install
	$(PY) bench/drift_view.py

# L = 0 on a deployment of its own: on a 2-CPU machine, three busy pairs beside it add their wait
# for a CPU to its latency (as tests/test_e2e_lag.py, which runs it first, alone).
bench-lag: install
	$(PY) bench/lag.py --cases l0
	$(PY) bench/lag.py --cases l5 l30 spike

# Rows repaired per second against plain batched statements, then commit-to-repair on a deployment.
bench-repair: install
	$(PY) bench/repair.py

# The README's UI screenshots (docs/img/); needs Debian's chromium.
screenshot: install
	$(PY) docs/screenshot.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
