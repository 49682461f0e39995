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
