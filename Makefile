# Souk: the README's commands. `make run` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test bench bench-ab bench-cluster loadtest lint services install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/souk serve --demo --host $(HOST) --port $(PORT) --data-dir data

services:
	bash .ci/ensure-services.sh

test: $(STAMP) services
	$(PY) -m pytest -q -p no:cacheprovider --timeout=300 -n 2 --dist loadgroup

bench: $(STAMP) services
	mkdir -p reports/bench
	$(PY) bench/bench_fanout.py --sizes 1000,5000,10000 --rounds 3
	$(PY) bench/bench_joins.py --viewers 3000 --rate 500 --runs 5
	$(PY) -m pytest -q bench/test_bench_ledger.py -p no:cacheprovider -s
	$(PY) bench/bench_mirror.py
	$(PY) bench/media_bench.py all
	$(PY) bench/bench_ttff_browser.py

# fan-out and join of two revisions, alternated (a refactoring must not slow them):
# make bench-ab BASE=main RUNS=3
BASE ?= main
RUNS ?= 3
bench-ab: $(STAMP)
	mkdir -p reports/bench
	$(PY) bench/bench_ab.py --base $(BASE) --head HEAD --runs $(RUNS)

# the scale-out measurements (docs/scaleout.md): 1 node vs 2 workers under one viewer load,
# the flash-sale rush through 2 cluster nodes vs the embedded ledger, the media cascade's TTFF
# and hop, the engagement feature's guarded writes across nodes, the dashboard's queries on PostgreSQL
bench-cluster: $(STAMP) services
	mkdir -p reports/bench
	$(PY) -m pytest -q bench/test_bench_scaleout.py -p no:cacheprovider -s
	$(PY) bench/bench_cascade.py --samples 5
	PYTHONPATH=. $(PY) bench/bench_engagement_cluster.py
	PYTHONPATH=. $(PY) bench/bench_dashboard_pg.py

loadtest: $(STAMP)
	bash .ci/loadtest.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check server media client_sdk loadtest tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) data reports .pytest_cache .mypy_cache .ruff_cache
