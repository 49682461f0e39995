from perflab.reports import NOTEBOOKS_DIR, run_suite


def test_suite_writes_html_and_index(tmp_path):
    suite = run_suite("smoke", reports_dir=tmp_path, notebooks=[NOTEBOOKS_DIR / "01_baseline.ipynb"],
                      echo=lambda _: None)
    assert suite.ok, suite.notebooks
    html = (suite.out_dir / "01_baseline.html").read_text()
    assert "<img" in html or "image/png" in html
    assert "lab = open_lab" not in html  # input cells are left out of the report
    index = suite.index.read_text()
    assert 'href="01_baseline.html"' in index and "Bottleneck: Path" in index and "Baseline breakdown" in index
    assert (suite.out_dir / "baseline.json").exists()
