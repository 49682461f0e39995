"""Benchmark results as data: versioned JSON with raw samples and the environment, never just printed numbers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from perflab.db.engine import perflab_home
from perflab.measure.environment import collect_environment
from perflab.measure.results import finite

BENCH_SCHEMA_VERSION = 1


def bench_dir() -> Path:
    path = perflab_home() / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_bench(name: str, results: dict, *, samples: dict | None = None, targets: dict | None = None,
               params: dict | None = None, engine=None, path: Path | None = None) -> Path:
    """Write ``<perflab home>/bench/<name>-<UTC time>.json``: results, raw samples, targets and the environment.

    Every run gets a file of its own, so earlier records (and the commits they measured) are kept, never overwritten.
    """
    now = datetime.now(UTC)
    record = {
        "schema_version": BENCH_SCHEMA_VERSION,
        "benchmark": name,
        "created_at": now.isoformat(),
        "params": params or {},
        "results": results,
        "targets": targets or {},
        "samples": samples or {},
        "environment": collect_environment(engine),
    }
    path = path or bench_dir() / f"{name}-{now:%Y%m%dT%H%M%S.%fZ}.json"
    path.write_text(json.dumps(finite(record), indent=1, default=str, allow_nan=False))
    return path
