"""What a notebook works with, in one call: preset, simulator, database, output folder.

``open_lab(preset, base_url, out_dir)`` takes the notebook's parameters as they come (papermill
passes them), validates them with one clear message each, starts a simulator when no ``base_url``
is given, and ensures the database and its schema. Without an ``out_dir`` the results go to a temporary
folder that is removed when the process (the kernel) exits, or by the next ``open_lab`` when it was killed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from sqlalchemy.engine import Engine

from perflab.api.client import AggregatesSource
from perflab.db.engine import get_engine
from perflab.db.migrate import apply_schema
from perflab.errors import InputError
from perflab.measure.results import RunResult, RunSet
from perflab.pipeline.fixes import FixSet
from perflab.pipeline.measured import build_client, measured_backfill
from perflab.pipeline.presets import Preset, get_preset
from perflab.pipeline.scheduler import Workload
from perflab.simulator import SimulatorProcess, start_simulator
from perflab.simulator.lifeline import exit_on_sigterm
from perflab.simulator.process import fetch_stats

HEADLESS_ENV = "PERFLAB_HEADLESS"
SCRATCH_NAME = re.compile(r"perflab-(\d+)-[a-z0-9_]{8}")  # TemporaryDirectory(prefix=f"perflab-{pid}-")


@dataclass
class Lab:
    """A preset bound to a running simulator, a database and a folder for results."""

    preset: Preset
    base_url: str
    out_dir: Path
    engine: Engine
    simulator: SimulatorProcess | None = None
    results: dict[str, RunResult] = field(default_factory=dict)
    scratch: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @property
    def temporary(self) -> bool:
        """True when ``out_dir`` is a temporary folder, removed when this process exits."""
        return self.scratch is not None

    def where(self, path: Path) -> str:
        """``path`` for a notebook's "wrote ..." line, saying so when it will not outlive the kernel."""
        if self.temporary:
            return f"{path} (a temporary folder, removed when the kernel exits: pass out_dir to keep it)"
        return str(path)

    @property
    def workload(self) -> Workload:
        return Workload.from_preset(self.preset)

    def client(self, fixes: FixSet | None = None, base_url: str | None = None, **kw) -> AggregatesSource:
        """A client for this lab's API (or ``base_url``): backoff and pacing (toward the preset's rate limit) as the
        fixes say, guarded by the circuit breaker when ``api.breaker`` is on."""
        return build_client(fixes or FixSet(), base_url or self.base_url, rate_limit_per_s=self.preset.rate_limit_per_s,
                            **kw)

    def server_stats(self) -> dict:
        return fetch_stats(self.base_url)

    def backfill(self, fixes: str | FixSet = "none", label: str | None = None, *, fresh: bool = True,
                 workload: Workload | None = None, progress: bool | None = None,
                 instrument: bool = True, base_url: str | None = None) -> RunResult:
        """One measured backfill with ``fixes``; ``fresh`` empties the tables first so runs compare.

        ``base_url`` points it at another API than the lab's (e.g. a simulator injecting faults). Its timeline goes
        to ``<out_dir>/traces/`` (:mod:`perflab.measure.trace`).

        A progress bar shows unless ``perflab run`` executes the notebook headlessly (``PERFLAB_HEADLESS``).
        """
        if progress is None:
            progress = not os.environ.get(HEADLESS_ENV)
        fixset = fixes if isinstance(fixes, FixSet) else FixSet.parse(fixes)
        result = measured_backfill(workload or self.workload, fixset, self.engine, preset=self.preset,
                                   base_url=base_url or self.base_url, label=label, progress=progress,
                                   instrument=instrument, fresh=fresh, trace=self.out_dir / "traces")
        self.results[result.label] = result
        return result

    def repeat(self, fixes: str | FixSet = "none", label: str | None = None, n: int | None = None,
               progress: bool | None = None) -> RunSet:
        """``n`` (default: the preset's ``repeats``) runs of one configuration, for medians and spread.

        Runs of the same fixes on the same workload already measured into this ``out_dir`` (by any notebook
        of the report) count toward ``n``, so the suite never measures one configuration twice over.
        """
        fixset = fixes if isinstance(fixes, FixSet) else FixSet.parse(fixes)
        label = label or fixset.spec
        cache = self.out_dir / "runs" / f"{_cache_name(fixset)}.json"
        workload = self.workload.to_dict()
        found = (RunSet.load(cache).runs if cache.exists() else []) + (self.saved_baseline() if fixset.spec == "none"
                                                                      else [])
        runs = list({r.run_id: r for r in found if r.params.get("workload") == workload
                     and r.params.get("preset") == self.preset.name}.values())
        while len(runs) < (n or self.preset.repeats):
            runs.append(self.backfill(fixset, label=label, progress=progress))
            RunSet(label, runs).save(cache)
        return RunSet(label, runs[: n or self.preset.repeats])

    def saved_baseline(self) -> list[RunResult]:
        """The baseline run notebook 01 saved into this ``out_dir``, if any (to reuse, not re-run)."""
        path = self.out_dir / "baseline.json"
        return [RunResult.load(path)] if path.exists() else []

    def save(self, result: RunResult, name: str) -> Path:
        """Write ``result`` as ``<out_dir>/<name>.json``."""
        return result.save(self.out_dir / f"{name}.json")

    def publish_headline(self, name: str, numbers: dict) -> Path:
        """Numbers the report index shows for this notebook (``<out_dir>/headlines/<name>.json``)."""
        path = self.out_dir / "headlines" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(numbers, indent=1, default=str))
        return path

    def close(self) -> None:
        if self.simulator is not None:
            self.simulator.stop()
            self.simulator = None


def _cache_name(fixes: FixSet) -> str:
    """A file name for a configuration's runs: its spec when short, else a hash of it (file names stop at 255
    bytes, and ``all`` spells out every fix)."""
    key = f"{fixes.spec.replace(',', '+')}@{fixes.rollout:g}"
    return key if len(key) <= 100 else f"fixes-{hashlib.sha256(key.encode()).hexdigest()[:16]}@{fixes.rollout:g}"


def _in_kernel() -> bool:
    """True inside a Jupyter (ipykernel) kernel, whose process the lab may shape; not in a script or pytest."""
    app = sys.modules.get("ipykernel.kernelapp")
    return app is not None and app.IPKernelApp.initialized()


def _scratch_dir() -> tempfile.TemporaryDirectory:
    """A temporary ``out_dir`` named after this process; first remove those of processes killed before their
    exit handlers ran (a kernel shut down with SIGKILL), so none piles up in the temp folder."""
    for path in Path(tempfile.gettempdir()).glob("perflab-*-*"):
        found = SCRATCH_NAME.fullmatch(path.name)
        if found and path.is_dir() and not psutil.pid_exists(int(found[1])):
            shutil.rmtree(path, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"perflab-{os.getpid()}-", ignore_cleanup_errors=True)


def open_lab(preset: str | Preset = "smoke", base_url: str | None = None, out_dir: str | None = None) -> Lab:
    """Validate notebook parameters and bring up what the notebook needs (a ``Preset`` object: a variant
    of a named preset, e.g. without its rate limit, for a benchmark)."""
    if not isinstance(preset, (str, Preset)):
        raise InputError(f"parameter preset must be a preset name (str), got {type(preset).__name__}")
    if base_url is not None and not isinstance(base_url, str):
        raise InputError(f"parameter base_url must be a URL string or None, got {type(base_url).__name__}")
    if out_dir is not None and not isinstance(out_dir, (str, Path)):
        raise InputError(f"parameter out_dir must be a path string or None, got {type(out_dir).__name__}")
    p = preset if isinstance(preset, Preset) else get_preset(preset)
    engine = get_engine()
    apply_schema(engine)
    scratch = None if out_dir else _scratch_dir()
    out = Path(out_dir or scratch.name)
    out.mkdir(parents=True, exist_ok=True)
    if _in_kernel():
        exit_on_sigterm()  # a kernel SIGTERMed at shutdown still stops its simulator and leaves the embedded server
    sim = start_simulator(p.simulator_config()) if base_url is None else None  # stopped at exit too
    return Lab(p, sim.url if sim else base_url, out, engine, sim, scratch=scratch)
