"""The notebooks are part of CI: each is thin, parameterised with the smoke preset, and collected by nbval."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_suite_exists():
    assert NOTEBOOKS and NOTEBOOKS[0].name == "01_baseline.ipynb"


def test_test_command_runs_every_notebook_through_nbval():
    makefile = (ROOT / "Makefile").read_text()
    test_recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "--nbval-lax" in test_recipe and " notebooks" in test_recipe
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_thin_parameterised_and_clean(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "one cell tagged 'parameters'"
    src = "".join(params[0]["source"])
    assert 'preset = "smoke"' in src and "base_url = None" in src and "out_dir = None" in src
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "commit without outputs"
    assert not any("def " in "".join(c["source"]) for c in code), "logic belongs in perflab, not the notebook"
    assert any(c["cell_type"] == "markdown" for c in nb["cells"])
