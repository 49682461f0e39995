"""Run the notebook suite headlessly (papermill) into ``reports/<run-id>/`` as HTML, with an index page."""

from __future__ import annotations

import html
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from perflab.db.engine import PROJECT_ROOT, get_engine
from perflab.db.migrate import apply_schema
from perflab.errors import PerflabError
from perflab.measure.results import RunResult
from perflab.presets import get_preset
from perflab.redact import redact
from perflab.simulator import SimulatorConfig, start_simulator

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
REPORTS_DIR = PROJECT_ROOT / "reports"


@dataclass
class NotebookRun:
    """One executed notebook: where its HTML is, how long it took, and its error if it failed."""

    name: str
    html: Path
    seconds: float
    error: str | None = None


@dataclass
class SuiteRun:
    run_id: str
    out_dir: Path
    preset: str
    notebooks: list[NotebookRun] = field(default_factory=list)

    @property
    def index(self) -> Path:
        return self.out_dir / "index.html"

    @property
    def ok(self) -> bool:
        return all(nb.error is None for nb in self.notebooks)


def discover_notebooks(directory: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The suite: ``NN_name.ipynb`` files in order."""
    return sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))


def export_html(notebook: Path, target: Path) -> Path:
    """Convert an executed notebook to HTML without input cells (a report, not code)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    target.write_text(redact(body))
    return target


def _execute(notebook: Path, out_dir: Path, parameters: dict, timeout: int) -> str | None:
    import papermill

    logging.getLogger("papermill").setLevel(logging.WARNING)
    try:
        papermill.execute_notebook(
            str(notebook), str(out_dir / notebook.name), parameters=parameters, kernel_name="python3",
            execution_timeout=timeout, cwd=str(notebook.parent), progress_bar=False, log_output=False,
        )
    except Exception as exc:  # papermill wraps kernel errors; the HTML of the partial run shows the cell
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        return redact(lines[-1] if lines else type(exc).__name__)
    return None


def run_suite(preset: str = "standard", *, reports_dir: Path = REPORTS_DIR, notebooks: list[Path] | None = None,
              timeout: int = 900, echo: Callable[[str], None] = print) -> SuiteRun:
    """Start a simulator, ensure the DB, execute each notebook with ``preset`` and write the index."""
    p = get_preset(preset)
    notebooks = notebooks if notebooks is not None else discover_notebooks()
    if not notebooks:
        raise PerflabError(f"no notebooks found in {NOTEBOOKS_DIR}")
    run_id = f"{datetime.now():%Y%m%d-%H%M%S}-{p.name}"
    suite = SuiteRun(run_id, reports_dir / run_id, p.name)
    suite.out_dir.mkdir(parents=True, exist_ok=True)
    apply_schema(get_engine())
    with start_simulator(SimulatorConfig.for_preset(p)) as sim:
        params = {"preset": p.name, "base_url": sim.url, "out_dir": str(suite.out_dir)}
        for nb in notebooks:
            started = time.perf_counter()
            error = _execute(nb, suite.out_dir, params, timeout)
            executed = suite.out_dir / nb.name
            target = suite.out_dir / f"{nb.stem}.html"
            if executed.exists():
                export_html(executed, target)
            run = NotebookRun(nb.stem, target, time.perf_counter() - started, error)
            suite.notebooks.append(run)
            echo(f"{'ok  ' if error is None else 'FAIL'} {nb.stem} ({run.seconds:.1f}s)"
                 + (f": {error}" if error else ""))
    write_index(suite)
    return suite


def _headlines(out_dir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((out_dir / "headlines").glob("*.json"))}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return html.escape(str(value))


def write_index(suite: SuiteRun) -> Path:
    """The index page: the baseline breakdown first, then each notebook with its headline numbers."""
    out = suite.out_dir
    parts = [f"<h1>perflab report <small>{html.escape(suite.run_id)}</small></h1>",
             f"<p>Preset <b>{html.escape(suite.preset)}</b>. Every number below was measured in this run.</p>"]
    baseline = out / "baseline.json"
    if baseline.exists():
        r = RunResult.load(baseline)
        rows = "".join(f"<tr><td>{s}</td><td>{v:.2f}s</td><td>{r.stage_shares[s]:.0%}</td></tr>"
                       for s, v in r.breakdown()["seconds"].items())
        parts.append(f"<h2>Baseline: {r.wall_seconds:.1f}s for {len(r.jobs)} jobs, {r.rows_written:,} rows</h2>"
                     f"<table><tr><th>stage</th><th>busy</th><th>share</th></tr>{rows}</table>")
    heads = _headlines(out)
    items = []
    for nb in suite.notebooks:
        status = "" if nb.error is None else f' <span class="fail">failed: {html.escape(nb.error)}</span>'
        nums = heads.get(nb.name, {})
        detail = ", ".join(f"{html.escape(k)}: {_fmt(v)}" for k, v in nums.items())
        items.append(f'<li><a href="{nb.html.name}">{html.escape(nb.name)}</a> ({nb.seconds:.0f}s){status}'
                     + (f"<br><small>{detail}</small>" if detail else "") + "</li>")
    parts.append(f"<h2>Notebooks</h2><ul>{''.join(items)}</ul>")
    style = ("body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .8em;text-align:right}"
             "td:first-child{text-align:left}.fail{color:#b00}small{color:#666}li{margin:.5em 0}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>perflab {html.escape(suite.run_id)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    suite.index.write_text(redact(page))
    return suite.index
