# Two commands a newcomer needs: `make report` (the notebook suite into reports/) and `make test`.
# Each bootstraps the virtualenv, the package and the Jupyter kernel on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.perflab-installed
PRESET ?= standard

.PHONY: report test lint clean

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

lint: $(STAMP)
	$(BIN)/ruff check perflab tests benchmarks

clean:
	rm -rf $(VENV) .perflab
