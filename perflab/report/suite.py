"""Run the notebook suite headlessly (papermill) into ``reports/<run-id>/`` as HTML, with an index page."""

from __future__ import annotations

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
from perflab.pipeline.presets import get_preset
from perflab.redact import redact
from perflab.report.index import write_index
from perflab.simulator import start_simulator
from perflab.simulator.lifeline import sigterm_as_exit
from perflab.studies.lab import HEADLESS_ENV

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
              timeout: int | None = None, echo: Callable[[str], None] = print) -> SuiteRun:
    """Start a simulator, ensure the DB, execute each notebook with ``preset`` and write the index.

    ``timeout`` limits each cell (default: the preset's ``cell_timeout_s``). Nothing it starts outlives it: the
    simulator has its lifeline (:mod:`perflab.simulator.lifeline`), each kernel polls for its parent (ipykernel's
    ``JPY_PARENT_PID``) and a SIGTERM unwinds through the cleanup.
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
    with sigterm_as_exit(), start_simulator(p.simulator_config()) as sim:
        params = {"preset": p.name, "base_url": sim.url, "out_dir": str(suite.out_dir)}
        for nb in notebooks:
            started = time.perf_counter()
            error = _execute(nb, suite.out_dir, params, timeout or p.cell_timeout_s)
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
