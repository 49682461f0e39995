"""The environment a run measured on: versions, CPU, database server. Saved with every result."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
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


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect_environment(engine: Engine | None = None) -> dict:
    """What produced a result: perflab version and commit, Python, CPU, and the DB server."""
    env = {
        "perflab_version": perflab.__version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    if engine is not None:
        env["db"] = server_info(engine)
    return env
