# conduit-api: the two commands are `make run` and `make test`; everything else supports them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PG_DATA := .data/postgres
PG_PORT ?= 54329
HOST ?= 127.0.0.1
PORT ?= 8000

.DEFAULT_GOAL := help
.PHONY: help install run migrate test e2e lint secrets-baseline format lock bench slo-plot clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml requirements-production.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements-production.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## Create .venv and install the app with its dev tools

# DATABASE_URL from the environment or .env wins; otherwise a local cluster under .data/.
define database_url
$$(url="$${DATABASE_URL:-$$(sed -n 's/^DATABASE_URL=//p' .env 2>/dev/null | tail -n1)}"; \
  if [ -z "$$url" ]; then url=$$($(PY) -m devstack.servers ensure-postgres $(PG_DATA) $(PG_PORT)) || exit 1; fi; \
  echo "$$url")
endef

migrate: install  ## Apply Alembic migrations (alembic upgrade head)
	DATABASE_URL="$(database_url)" $(VENV)/bin/alembic upgrade head

run: install  ## Serve on http://127.0.0.1:8000 with reload (starts a local Postgres if needed)
	@url="$(database_url)"; \
	DATABASE_URL="$$url" $(VENV)/bin/alembic upgrade head && \
	DATABASE_URL="$$url" exec $(VENV)/bin/uvicorn app.main:app --reload --host $(HOST) --port $(PORT)

test: install  ## Whole suite against real Postgres and Redis, with coverage
	$(PY) -m pytest --cov --cov-report=term-missing:skip-covered $(PYTEST_ARGS)

e2e: install  ## Docker suite (root): builds the images, deploys with deploy.sh under load
	$(PY) -m pytest -m e2e tests/e2e -p no:randomly -p no:cacheprovider $(PYTEST_ARGS)

# Beyond style and types: bandit on app/ ([tool.bandit] in pyproject.toml), gixy on the rendered
# nginx configs, detect-secrets against .secrets.baseline, hadolint on every Dockerfile and
# shellcheck on every shell script. README, "Lint", says how to handle a finding.
lint: install  ## ruff, mypy, bandit, gixy, detect-secrets, hadolint, shellcheck
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy app tests alembic bench devstack
	$(VENV)/bin/bandit -c pyproject.toml -r app --quiet
	$(PY) -m devstack.gixy_check
	$(PY) -m devstack.secrets_check
	files=$$($(PY) -m devstack.repo_files dockerfiles) && $(VENV)/bin/hadolint --no-color $$files
	files=$$($(PY) -m devstack.repo_files shell-scripts) && $(VENV)/bin/shellcheck --severity=style $$files

secrets-baseline: install  ## Rescan .secrets.baseline (audit labels kept); then audit what is new
	$(PY) -m devstack.secrets_check update

format: install  ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

lock: install  ## Regenerate requirements-production.txt from pyproject.toml
	$(VENV)/bin/uv pip compile pyproject.toml --quiet --python-version 3.11 \
	  --custom-compile-command "make lock" -o requirements-production.txt

bench: install  ## Load benchmark (own Postgres/Redis, production app, wrk or locust); prints figures
	$(PY) -m bench.run $(BENCH_ARGS)

slo-plot: install  ## Redraw docs/img/slo-panel.png: a real Prometheus evaluates the SLO rules through an outage
	$(PY) -m bench.slo_plot $(SLO_PLOT_ARGS)

clean:  ## Stop the local cluster and remove .venv and .data
	-$(PY) -c "from devstack.servers import PostgresServer as P; from pathlib import Path; P(Path('$(PG_DATA)').resolve(), $(PG_PORT)).stop()"
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache .coverage
