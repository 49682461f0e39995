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
