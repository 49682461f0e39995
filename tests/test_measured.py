"""One measured backfill for the CLI, the notebooks and the resilience study: every run JSON has the same fields."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from urllib.parse import urlsplit

import sqlalchemy as sa

from perflab.api.client import PolygonClient
from perflab.pipeline.measured import stats_delta
from perflab.pipeline.scheduler import Workload
from perflab.simulator import SimulatorConfig, start_simulator
from perflab.simulator.process import fetch_stats
from perflab.studies.lab import open_lab


def _fields(run: dict) -> tuple[set, set, set]:
    """The keys of a saved run: top level, params, and its jobs'."""
    return set(run), set(run["params"]), {k for job in run["jobs"] for k in job}


def test_cli_and_notebook_runs_carry_the_same_fields_server_stats_and_breaker_report(clean_db, sim, tmp_path):
    out = tmp_path / "cli.json"
    proc = subprocess.run([sys.executable, "-m", "perflab", "backfill", "--simulator", "--preset", "smoke",
                           "--symbols", "AAPL", "--timeframes", "1d", "--out", str(out), "--fixes", "api.breaker"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lab = open_lab("smoke", sim.url, str(tmp_path / "lab"))
    workload = Workload(("AAPL",), ("1d",), lab.preset.start, lab.preset.end)
    notebook = json.loads(lab.save(lab.backfill("api.breaker", workload=workload, progress=False), "nb").read_text())
    cli = json.loads(out.read_text())

    assert _fields(cli) == _fields(notebook)
    for run in (cli, notebook):
        requests = sum(job["requests"] for job in run["jobs"])
        assert requests > 0 and run["server_stats"]["requests"] == requests  # the server counted this run's requests
        assert [call["outcome"] for call in run["params"]["breaker"]["calls"]] == ["success"]
        assert run["params"]["preset"] == "smoke" and run["params"]["workload"] == workload.to_dict()
    with clean_db.connect() as conn:
        stored = set(conn.execute(sa.text("SELECT run_id FROM perf_runs WHERE run_id IN (:a, :b)"),
                                  {"a": cli["run_id"], "b": notebook["run_id"]}).scalars())
    assert stored == {cli["run_id"], notebook["run_id"]}


def _one_request(url: str) -> None:
    client = PolygonClient(url)
    try:
        client.get_aggregates("AAPL", 1, "day", "2024-03-04", "2024-03-05")
    finally:
        client.close()


def test_server_stats_are_the_runs_counts_and_none_when_the_server_restarted_meanwhile():
    config = SimulatorConfig(time_scale=0.0005)
    with start_simulator(config) as first:
        before, since = fetch_stats(first.url), time.monotonic()
        _one_request(first.url)
        delta = stats_delta(before, fetch_stats(first.url), time.monotonic() - since)
        assert delta["requests"] == 1 and delta["uptime_s"] > 0
        before, since = fetch_stats(first.url), time.monotonic()
        first.stop()
        with start_simulator(config, port=urlsplit(first.url).port) as again:
            _one_request(again.url)
            assert stats_delta(before, fetch_stats(again.url), time.monotonic() - since) == {}
