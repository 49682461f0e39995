"""Every measured run, stored in the ``perf_runs`` table: charted as the history on this machine, and read back whole
so any stored run can be compared again (``perflab check`` compares a new run with those of its configuration).

A run's configuration is its workload, fixes, rollout and preset; its environment is what ``compare`` requires to
match (CPU model and count, Python, database server). Both are stored as keys, so the runs one check needs are one
indexed query away.
"""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from perflab.measure.compare import ENV_KEYS
from perflab.measure.results import RunResult

DEFAULT_HISTORY = 50
"""How many of the newest stored runs a check compares with: recent enough to be this machine's present, enough
that a single run can be judged (one run against 19 or more)."""


def _digest(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


def config_key(params: dict) -> str:
    """Which configuration a run measured: the same workload, fixes, rollout and preset give the same key."""
    workload = json.loads(json.dumps(params.get("workload"), default=str))
    return _digest({"workload": workload, "fixes": params.get("fixes"), "rollout": params.get("rollout", 1.0),
                    "preset": params.get("preset")})


def environment_key(environment: dict) -> str:
    """Which machine a run measured on, as far as comparisons go: CPU, Python and the database server's version."""
    return _digest({**{k: environment.get(k) for k in ENV_KEYS},
                    "db": (environment.get("db") or {}).get("server_version")})


def store_run(engine: Engine, result: RunResult) -> None:
    """Insert ``result`` (its whole JSON) into ``perf_runs`` (once: re-storing the same run id is a no-op)."""
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO perf_runs (run_id, label, preset, fixes, started_at, wall_seconds, result, config_key, "
            "environment_key) VALUES (:id, :label, :preset, :fixes, :started, :wall, CAST(:result AS jsonb), "
            ":config, :env) ON CONFLICT (run_id) DO NOTHING"), {
            "id": result.run_id, "label": result.label, "preset": result.params.get("preset"),
            "fixes": result.params.get("fixes"), "started": result.started_at, "wall": result.wall_seconds,
            "result": json.dumps(result.to_dict(), default=str, allow_nan=False),
            "config": config_key(result.params), "env": environment_key(result.environment)})


def stored_runs(engine: Engine, params: dict, environment: dict, *, limit: int = DEFAULT_HISTORY,
                exclude: tuple[str, ...] | list[str] = ()) -> list[RunResult]:
    """The newest ``limit`` stored runs of the configuration ``params`` on the environment ``environment``, oldest
    first, without the run ids in ``exclude`` (a run checked against its history is not part of it)."""
    rows = pd.read_sql_query(
        sa.text("SELECT run_id, result FROM perf_runs WHERE config_key = :config AND environment_key = :env "
                "ORDER BY started_at DESC LIMIT :n"),
        engine, params={"config": config_key(params), "env": environment_key(environment),
                        "n": limit + len(exclude)})
    excluded = set(exclude)
    runs = [RunResult.from_dict(r) for run_id, r in zip(rows["run_id"], rows["result"], strict=True)
            if run_id not in excluded]
    return runs[:limit][::-1]


def history(engine: Engine, preset: str | None = None, limit: int = 500) -> pd.DataFrame:
    """Stored runs, oldest first, with their busy seconds per stage."""
    rows = pd.read_sql_query(
        sa.text("SELECT run_id, label, preset, fixes, started_at, wall_seconds, "
                "(result->'summary'->'stage_seconds') AS stages FROM perf_runs "
                "WHERE (CAST(:preset AS text) IS NULL OR preset = :preset) ORDER BY started_at DESC LIMIT :n"),
        engine, params={"preset": preset, "n": limit})
    rows = rows.iloc[::-1].reset_index(drop=True)
    for stage in ("api", "db", "compute"):
        rows[stage] = [float((s or {}).get(stage, 0.0)) for s in rows["stages"]]
    return rows.drop(columns="stages")
