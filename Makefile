# `make run`: everything from a bare machine to a running SACCO. `make test`: the suite.
# Installs come from the lock files (exact versions and hashes); `make lock` refreshes them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Runtime (what the Docker image installs) and runtime + dev (what make installs). The dev
# lock is resolved under the runtime one, so both name the same versions.
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
UV_COMPILE := $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes

.PHONY: run test lint format lock clean mutate

$(BIN)/python:
	@echo "== creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)

# pip names each package as it comes (no --quiet): a first install takes a minute or two.
$(STAMP): $(BIN)/python $(DEV_LOCK) pyproject.toml
	@echo "== installing $$(grep -c '^[A-Za-z0-9].*==' $(DEV_LOCK)) pinned packages from $(DEV_LOCK) (a minute or two the first time)"
	$(BIN)/python -m pip install --progress-bar off --disable-pip-version-check --require-hashes -r $(DEV_LOCK)
	@echo "== installing this project (editable)"
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@echo "== installed; the next make skips this until a lock file changes"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/sacco up

# The suite over every core (pytest-xdist), each worker on its own database and Redis db
# (tests/conftest.py); `make test PYTEST_WORKERS=0` runs it in this one process.
PYTEST_WORKERS ?= auto
test: $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy  # app/, as configured in pyproject.toml

# Mutation testing of the money core ([tool.mutmut] in pyproject.toml): slow (hours on two
# cores for every module), so never part of `make test`. It resumes where it stopped;
# `make mutate MUTANTS='app.money.*'` runs one module's mutants; `rm -rf mutants` starts over.
MUTANTS ?=
MUTATION_FLOOR ?= 95
mutate: $(STAMP)
	$(BIN)/mutmut run $(MUTANTS)
	$(BIN)/python tests/mutation_score.py --fail-under $(MUTATION_FLOOR)

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Today's releases within pyproject.toml's ranges, for Python 3.11+ on any platform.
lock: $(STAMP)
	$(UV_COMPILE) --upgrade --extra build pyproject.toml -o $(LOCK)
	$(UV_COMPILE) --upgrade --extra build --extra dev --constraint $(LOCK) pyproject.toml -o $(DEV_LOCK)
	rm -f $(STAMP)

clean:
	rm -rf $(VENV) instance .pytest_cache
