import pytest

from perflab.report.suite import NOTEBOOKS_DIR, run_suite


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return run_suite("smoke", reports_dir=tmp_path_factory.mktemp("reports"),
                     notebooks=[NOTEBOOKS_DIR / "01_baseline.ipynb"], echo=lambda _: None)


def test_suite_writes_html_and_index(suite):
    assert suite.ok, suite.notebooks
    html = (suite.out_dir / "01_baseline.html").read_text()
    assert "<img" in html or "image/png" in html
    assert "lab = open_lab" not in html  # input cells are left out of the report
    index = suite.index.read_text()
    assert 'href="01_baseline.html"' in index and "Bottleneck: Path" in index and "Baseline breakdown" in index
    assert (suite.out_dir / "baseline.json").exists()


def test_index_looks_right_in_a_headless_browser(suite, tmp_path):
    from screenshot import find_chromium, inspect, screenshot

    if find_chromium() is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    look = inspect(screenshot(suite.index, tmp_path / "index.png"))
    assert look.looks_right, look


def test_each_preset_gives_a_cell_the_time_its_backfills_take(tmp_path, monkeypatch):
    from perflab.report import suite as suite_module

    timeouts = []
    monkeypatch.setattr(suite_module, "_execute", lambda nb, out, params, timeout: timeouts.append(timeout))
    for preset, given in (("plan", None), ("smoke", None), ("plan", 60)):
        run_suite(preset, reports_dir=tmp_path, notebooks=[NOTEBOOKS_DIR / "01_baseline.ipynb"], timeout=given,
                  echo=lambda _: None)
    assert timeouts == [4 * 3600, 900, 60]  # a plan cell repeats ten-minute baselines; 900 s would cut it


def test_the_plan_preset_runs_its_scenario_unless_told_otherwise(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    from perflab import cli
    from perflab.report import suite as suite_module

    ran = []
    monkeypatch.setattr(suite_module, "run_suite", lambda preset, notebooks, **kw: ran.append(
        (preset, [nb.stem[:2] for nb in notebooks])) or SimpleNamespace(index=tmp_path / "index.html", ok=True))
    for argv in (["run", "--preset", "plan"], ["run", "--preset", "plan", "--only", "all"],
                 ["run", "--preset", "plan", "--only", "03"], ["run", "--preset", "smoke"]):
        assert cli.main([*argv, "--reports", str(tmp_path)]) == 0
    every = [nb.stem[:2] for nb in suite_module.discover_notebooks()]
    assert ran == [("plan", ["01", "06"]), ("plan", every), ("plan", ["03"]), ("smoke", every)]
    assert "preset plan: notebooks 01,06 (its default; --only all runs every notebook)" in capsys.readouterr().out
