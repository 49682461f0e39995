# Two commands a newcomer needs: `make report` (the notebook suite into reports/) and `make test`.
# Each bootstraps the virtualenv, the package and the Jupyter kernel on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.perflab-installed
PRESET ?= standard

.PHONY: report test test-external lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

report: $(STAMP)
	$(BIN)/perflab run --preset $(PRESET)

test: $(STAMP)
	$(BIN)/python -m pytest -q --nbval-lax --nbval-current-env tests notebooks

# The database, resilience and whole-suite tests against the server in PERFLAB_DATABASE_URL (yours, or the one
# .ci/run starts); PERFLAB_TEST_PG_RESTART is a command that restarts it, for the restart drills.
EXTERNAL_TESTS := tests/test_database_urls.py tests/test_writers.py tests/test_group_commit.py \
	tests/test_migrate.py tests/test_resume.py tests/test_backfill.py tests/test_db_resilience.py \
	tests/test_resilience.py tests/test_resilience_faults.py tests/test_secrets.py

test-external: $(STAMP)
	@test -n "$$PERFLAB_DATABASE_URL" || { echo "set PERFLAB_DATABASE_URL to your PostgreSQL first" >&2; exit 2; }
	$(BIN)/python -m pytest -q $(EXTERNAL_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check perflab tests benchmarks

clean:
	rm -rf $(VENV) .perflab
