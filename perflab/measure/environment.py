"""The environment a run measured on: versions, CPU, database server. Saved with every result."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

from sqlalchemy.engine import Engine

import perflab
from perflab.db.engine import PROJECT_ROOT, server_info


def git_commit(root: Path = PROJECT_ROOT) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


LOADED_COMMIT = git_commit()
"""The commit checked out when this process imported perflab: the code a long-lived process (a notebook kernel, a
benchmark) runs, even after HEAD has moved on. A run records this, not HEAD at the time it ends."""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


LIBRARIES = {"numpy": ("numpy",), "pandas": ("pandas",), "sqlalchemy": ("sqlalchemy",), "psycopg": ("psycopg",),
             "psycopg2": ("psycopg2", "psycopg2-binary"), "requests": ("requests",), "perflab": ("perflab",)}
"""Libraries whose version can change a timing, each with the distributions that provide it."""


@cache
def library_versions() -> dict[str, str | None]:
    """Installed version of each of :data:`LIBRARIES` (None when absent): an upgrade is a cause of a change."""
    out = {}
    for name, dists in LIBRARIES.items():
        out[name] = None
        for dist in dists:
            try:
                out[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def load_average() -> list[float] | None:
    """The machine's 1, 5 and 15 minute load averages: a busy machine makes slower, noisier runs."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def collect_environment(engine: Engine | None = None) -> dict:
    """What produced a result: perflab version and the commit it was loaded from, Python and library versions, CPU and
    its load, DB server."""
    env = {
        "perflab_version": perflab.__version__,
        "git_commit": LOADED_COMMIT,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "libraries": dict(library_versions()),
        "load_average": load_average(),
    }
    if engine is not None:
        env["db"] = server_info(engine)
    return env
