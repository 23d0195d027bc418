# `make run` and `make test` each set up everything they need on a fresh machine (venv, pip install).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install when the dependency list changes; the stamp is named after pyproject.toml's hash.
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
EXTRAS ?= gp,ray,dev

.PHONY: install run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# The demo study on embedded defaults: SQLite under studies/, synthetic terrain unless
# data/mars_for_students.npz exists; then the best configuration is exported.
run: install
	$(BIN)/tune run --spec studies/demo.yaml
	$(BIN)/tune status
	$(BIN)/tune export-best --study demo

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest -q -ra

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache
