"""Every measured run, stored in the ``perf_runs`` table, so a chart can show the history on this machine."""

from __future__ import annotations

import json

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from perflab.measure.results import RunResult


def store_run(engine: Engine, result: RunResult) -> None:
    """Insert ``result`` into ``perf_runs`` (once: re-storing the same run id is a no-op)."""
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO perf_runs (run_id, label, preset, fixes, started_at, wall_seconds, result) "
            "VALUES (:id, :label, :preset, :fixes, :started, :wall, CAST(:result AS jsonb)) "
            "ON CONFLICT (run_id) DO NOTHING"), {
            "id": result.run_id, "label": result.label, "preset": result.params.get("preset"),
            "fixes": result.params.get("fixes"), "started": result.started_at, "wall": result.wall_seconds,
            "result": json.dumps({"summary": result.to_dict()["summary"], "params": result.params},
                                 default=str)})


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
