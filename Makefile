# Every target sets up what it needs: `make test` and `make demo` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export HYPOTHESIS_PROFILE ?= ci

.PHONY: install test lint typecheck pytest docs demo bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test,dev]"
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check $(wildcard clt_gen estimators tests experiments benchmarks)

typecheck: install
	$(VENV)/bin/mypy clt_gen estimators

pytest: install
	$(PY) -m pytest -n 2 -q

docs: install
	$(VENV)/bin/mkdocs build --strict -q -d site

test: lint typecheck pytest docs

demo: install
	$(VENV)/bin/clt-gen demo

bench: install
	$(PY) benchmarks/estimators_speed.py

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache runs .cache
