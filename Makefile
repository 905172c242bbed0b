# Everything a fresh machine needs: `make demo` and `make test` create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RNNREC := $(VENV)/bin/rnnrec
DEMO := demo-run

.PHONY: demo test test-fast docs lint install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

# Prepare -> train -> evaluate -> predict on the bundled MovieLens data. A first look, so a small
# model for a few epochs (the README's defaults, 224 units for 10 epochs, take far longer).
demo: install
	rm -rf $(DEMO)
	$(RNNREC) prepare datasets/ml-latest-small/ratings.csv --preset movielens -o $(DEMO)/data
	$(RNNREC) train $(DEMO)/data -o $(DEMO)/run --seed 0 --layers 64 --epochs 3
	$(RNNREC) evaluate $(DEMO)/run
	$(RNNREC) predict $(DEMO)/run datasets/ml-latest-small/ratings.csv -o $(DEMO)/run/predictions/recs.csv -k 10
	@echo "Recommendations (first rows) from $(DEMO)/run/predictions/recs.csv:"
	@head -n 6 $(DEMO)/run/predictions/recs.csv
	$(RNNREC) report $(DEMO)/run -o $(DEMO)/report.html
	@echo "Report: $(DEMO)/report.html (open it in a browser)"

test: install
	JAX_PLATFORMS=cpu $(PY) -m pytest -n auto --dist loadfile

# Everything but the tests marked slow (subprocesses, kill -9, PostgreSQL, the browser, benchmarks).
test-fast: install
	JAX_PLATFORMS=cpu $(PY) -m pytest -n auto --dist loadfile -m "not slow"

# The documentation site, built strictly (a broken link or a stale generated page fails it).
docs: install
	$(PY) -m pip install -q -e ".[test,docs]"
	$(PY) tools/architecture.py
	$(PY) tools/cli_reference.py
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict -q -d site

lint: install
	$(VENV)/bin/ruff check rnnrec_cli tests benchmarks tools
	$(VENV)/bin/ruff format --check rnnrec_cli tests benchmarks tools
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(DEMO) runs site
