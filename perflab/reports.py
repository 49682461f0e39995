"""Run the notebook suite headlessly (papermill) into ``reports/<run-id>/`` as HTML, with an index page."""

from __future__ import annotations

import html
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from perflab.db.engine import PROJECT_ROOT, get_engine
from perflab.db.migrate import apply_schema
from perflab.errors import PerflabError
from perflab.lab import HEADLESS_ENV
from perflab.measure.compare import compare
from perflab.measure.criteria import evaluate
from perflab.measure.history import history
from perflab.measure.results import RunSet
from perflab.measure.verdict import classify
from perflab.plots import history_chart, stacked_breakdown, to_png_base64
from perflab.presets import get_preset
from perflab.redact import redact
from perflab.simulator import SimulatorConfig, start_simulator
from perflab.simulator.lifeline import sigterm_as_exit

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


def select_notebooks(only: str, notebooks: list[Path]) -> list[Path]:
    """The suite's notebooks that ``only`` names (comma-separated numbers like ``01`` or ``1``, or names like
    ``01_baseline`` or ``baseline``), in suite order; a name that matches none is an error listing the choices."""
    def keys(nb: Path) -> set[str]:
        return {nb.stem, nb.stem[:2], nb.stem[3:]}

    wanted = [w.strip() for w in only.split(",") if w.strip()]
    wanted = [w.zfill(2) if w.isdigit() else w for w in wanted]
    unknown = [w for w in wanted if not any(w in keys(nb) for nb in notebooks)]
    if unknown or not wanted:
        choices = ", ".join(nb.stem for nb in notebooks) or f"none: {NOTEBOOKS_DIR} has no NN_name.ipynb"
        what = f"matches {', '.join(map(repr, unknown))}" if unknown else "was named"
        raise PerflabError(f"no notebook {what}: choose from {choices}")
    return [nb for nb in notebooks if keys(nb) & set(wanted)]


def export_html(notebook: Path, target: Path) -> Path:
    """Convert an executed notebook to HTML without input cells (a report, not code)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    target.write_text(redact(body))
    return target


@contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send this process's stderr, and so its kernels', to a file: kernel chatter stays out of the terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _execute(notebook: Path, out_dir: Path, parameters: dict, timeout: int) -> str | None:
    import papermill

    logging.getLogger("papermill").setLevel(logging.WARNING)
    os.environ[HEADLESS_ENV] = "1"  # kernels inherit it: no progress bars in the HTML reports
    try:
        with _stderr_to(out_dir / "kernels.log"):
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
    """Start a simulator, ensure the DB, execute each notebook with ``preset`` and write the index.

    Nothing it starts outlives it: the simulator has its lifeline (:mod:`perflab.simulator.lifeline`), each
    kernel polls for its parent (ipykernel's ``JPY_PARENT_PID``) and a SIGTERM unwinds through the cleanup.
    """
    p = get_preset(preset)
    notebooks = notebooks if notebooks is not None else discover_notebooks()
    if not notebooks:
        raise PerflabError(f"no notebooks found in {NOTEBOOKS_DIR}")
    run_id = f"{datetime.now():%Y%m%d-%H%M%S}-{p.name}"
    suite = SuiteRun(run_id, reports_dir / run_id, p.name)
    suite.out_dir.mkdir(parents=True, exist_ok=True)
    engine = get_engine()
    apply_schema(engine)
    with sigterm_as_exit(), start_simulator(SimulatorConfig.for_preset(p)) as sim:
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
    write_index(suite, engine)
    return suite


def _headlines(out_dir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((out_dir / "headlines").glob("*.json"))}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return html.escape(str(value))


def _load_set(out_dir: Path, *names: str) -> RunSet | None:
    for name in names:
        if (out_dir / name).exists():
            return RunSet.load(out_dir / name)
    return None


def verdict_section(out_dir: Path) -> str:
    """The answer first: bottleneck path, baseline -> after seconds, improvement, criteria passed."""
    baseline = _load_set(out_dir, "baseline_runs.json", "baseline.json")
    if baseline is None:
        return "<p class='fail'>No baseline was measured in this run.</p>"
    verdict = classify(baseline)
    env = baseline.environment
    db = env.get("db", {})
    machine = (f"{env.get('cpu_model')} x{env.get('cpu_count')} · Python {env.get('python')} · "
               f"PostgreSQL {db.get('server_version')} · TimescaleDB "
               + (db["timescaledb"] if db.get("timescaledb") else "not available (plain tables, no hypertable)")
               + f" · perflab {env.get('perflab_version')} ({env.get('git_commit')})")
    shares = " · ".join(f"{s} {v:.0%}" for s, v in verdict.shares.items())
    out = [f"<div class='verdict'><h2>Bottleneck: Path {verdict.path} — {html.escape(verdict.name)}</h2>"
           f"<p>{html.escape(verdict.rule)} · busy-time shares: {shares} "
           f"(median of {len(baseline.runs)} baseline run{'s' if len(baseline.runs) > 1 else ''})</p>"]
    after = _load_set(out_dir, "after_all.json")
    if after is not None:
        total = compare(baseline, after, force=True).total
        crit = evaluate(baseline, after)["passed"].dropna()
        sig = "" if total.significant else " <b>(not significant)</b>"
        out.append(f"<p class='big'>{total.before:.2f}s → {total.after:.2f}s: <b>{total.improvement:.0%} less time"
                   f" ({total.speedup:.1f}x)</b>{sig} with all fixes · criteria passed: "
                   f"<b>{int(crit.sum())}/{len(crit)}</b></p>")
        img = to_png_base64(stacked_breakdown([baseline, after], title="Baseline vs all fixes: the wall time"))
        out.append(f"<img alt='baseline vs all fixes' src='data:image/png;base64,{img}'>")
    out.append(f"</div><p><small>{html.escape(machine)}</small></p>")
    table = baseline.runs[0].breakdown()
    rows = "".join(f"<tr><td>{st}</td><td>{baseline.median(st):.2f}s</td><td>{verdict.shares[st]:.0%}</td></tr>"
                   for st in table.index)
    out.append(f"<h3>Baseline breakdown: {baseline.median('wall_seconds'):.1f}s wall, "
               f"{len(baseline.runs[0].jobs)} jobs, "
               f"{baseline.runs[0].rows_written:,} rows</h3>"
               f"<table><tr><th>stage</th><th>busy (median)</th><th>share</th></tr>{rows}</table>")
    return "".join(out)


def history_section(engine, preset: str) -> str:
    runs = history(engine, preset=preset)
    if runs.empty:
        return ""
    img = to_png_base64(history_chart(runs, title=f"Every {preset} run stored on this machine ({len(runs)})"))
    return f"<h2>History</h2><img alt='run history' src='data:image/png;base64,{img}'>"


def write_index(suite: SuiteRun, engine=None) -> Path:
    """The index page: the verdict first, then each notebook with its headline numbers, then the history."""
    out = suite.out_dir
    parts = [f"<h1>perflab report <small>{html.escape(suite.run_id)}</small></h1>",
             f"<p>Preset <b>{html.escape(suite.preset)}</b>. Every number below was measured in this run.</p>",
             verdict_section(out)]
    heads = _headlines(out)
    items = []
    for nb in suite.notebooks:
        status = "" if nb.error is None else f' <span class="fail">failed: {html.escape(nb.error)}</span>'
        nums = heads.get(nb.name, {})
        detail = ", ".join(f"{html.escape(k)}: {_fmt(v)}" for k, v in nums.items())
        items.append(f'<li><a href="{nb.html.name}">{html.escape(nb.name)}</a> ({nb.seconds:.0f}s){status}'
                     + (f"<br><small>{detail}</small>" if detail else "") + "</li>")
    parts.append(f"<h2>Notebooks</h2><ul>{''.join(items)}</ul>")
    if (out / "PERFORMANCE_RESULTS.md").exists():
        parts.append("<p><a href='PERFORMANCE_RESULTS.md'>PERFORMANCE_RESULTS.md</a> (written from this run)</p>")
    if engine is not None:
        parts.append(history_section(engine, suite.preset))
    style = ("body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .8em;text-align:right}"
             "td:first-child{text-align:left}.fail{color:#b00}small{color:#666}li{margin:.5em 0}"
             ".verdict{background:#f4f7fb;border-left:5px solid #4C72B0;padding:.5em 1em}.big{font-size:1.25em}"
             "img{max-width:100%}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>perflab {html.escape(suite.run_id)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    suite.index.write_text(redact(page))
    return suite.index
