# `make run` and `make test` each set up everything they need on a fresh machine (venv, pip install,
# and for the tests Debian's chromium and docker-compose). CI runs `.ci/run`, which runs `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install when the dependency list changes; the stamp is named after pyproject.toml's hash.
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
EXTRAS ?= gp,ray,mlflow,dev
# What the tests drive besides Python: the browser test uses Debian's chromium at exactly this path
# (Playwright's own browser download is never used); tests/test_compose.py runs Debian's docker-compose
# (v1: validates the compose file without a Docker daemon). Override to point elsewhere.
CHROMIUM ?= /usr/bin/chromium
DOCKER_COMPOSE ?= docker-compose

.PHONY: install ensure-tune system-deps run test test-quick lint lint-imports bench clean compose-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# Every time, not only after an install: `pip install -U ray` (Ray's wheel has its own `tune` script)
# replaces our command without touching the stamp. Silent when `tune` is ours.
install: $(STAMP)
	@tools/ensure-tune $(BIN) -e .

# The guard alone, on any venv: `make ensure-tune VENV=path` (tests/test_install.py uses it).
ensure-tune:
	@tools/ensure-tune $(BIN) -e .

# As root: apt-get install what is missing; otherwise one line with the command to run, and exit 1.
system-deps:
	@tools/system-deps chromium=$(CHROMIUM) docker-compose=$(DOCKER_COMPOSE)

# docker-compose.yml's secrets: a .env with random POSTGRES_PASSWORD and RAY_AUTH_TOKEN (never overwritten).
.env:
	$(PYTHON) tools/make_env.py .env.example .env

# The demo study on embedded defaults: SQLite under studies/, synthetic terrain unless
# data/mars_for_students.npz exists; then the best configuration is exported.
run: install
	$(BIN)/tune run --spec studies/demo.yaml
	$(BIN)/tune status
	$(BIN)/tune export-best --study demo

# In this order: lint, format, import contracts, then the whole suite (slow tests included, as CI),
# with the 30 slowest tests listed at the end so the next change sees where the time goes.
test: install system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports  # DESIGN.md's one-way arrows between the rooms (pyproject.toml)
	$(BIN)/pytest -q -ra --durations=30

# The quick tier while editing: every room, no process, server, cluster, browser or training of a
# test's own (tests/tiers.py decides by what a test uses). Aimed at 3 minutes on 2 idle cores (issue 19).
test-quick: install
	$(BIN)/ruff check .
	$(BIN)/pytest -q -m "not slow" --durations=10

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports  # DESIGN.md's one-way arrows between the rooms (pyproject.toml)

lint-imports: install
	$(BIN)/lint-imports  # DESIGN.md's one-way arrows between the rooms (pyproject.toml)

# docker-compose.yml started for real and removed (tools/compose_check.py): PostgreSQL, the dashboard, two
# CPU tune-workers and a small U-Net study through `docker compose run --rm tune run`, export-best with
# its model, the model fetched from the dashboard's API; then the ray profile. Not part of `make test`
# (it builds images: the first build downloads TensorFlow and Ray); starts dockerd if none runs, and
# builds the base images from Debian's packages (tools/build-base-images) when no registry answers.
compose-check: install
	$(BIN)/python tools/compose_check.py

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache
