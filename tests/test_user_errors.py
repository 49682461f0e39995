"""What a new user sees when input is wrong or the API is out of reach: the real CLI, run as a user runs it.

Every failure is explained in words with its count, bad input is rejected (with the rule it broke) before any
request, a ticker the API does not know is named, and secrets never reach the terminal.
"""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from perflab.api.client import PolygonClient
from perflab.api.errors import ConnectionError as ApiConnectionError
from perflab.errors import InputError, PerflabError
from perflab.measure.results import JobRecord, RunResult
from perflab.pipeline.scheduler import Workload
from perflab.report.suite import discover_notebooks, select_notebooks

RANGE = ["--from", "2024-03-04", "--to", "2024-03-05"]
KEY = "sekret-key-7890"


def perflab(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m perflab ...`` with the test database in the environment (conftest exports it)."""
    return subprocess.run([sys.executable, "-m", "perflab", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def bars_stored(engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM market_data").scalar_one()


def test_unreachable_api_every_failure_explained_with_its_count():
    proc = perflab("backfill", "--base-url", "http://127.0.0.1:1", "--symbols", "AAPL,MSFT", "--timeframes", "1d,1h",
                   *RANGE, "--fixes", "none", env={"POLYGON_API_KEY": KEY})
    assert proc.returncode == 1
    failures = [line for line in proc.stderr.splitlines() if "jobs failed" in line]
    assert failures == ["perflab: 4 of 4 jobs failed: ConnectionError: "
                        "cannot reach the API at http://127.0.0.1:1: connection refused"], proc.stderr
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "HTTPConnectionPool" not in out and "Errno" not in out and KEY not in out


@pytest.mark.parametrize("url, rule", [
    ("not-a-url", "'not-a-url' is not an http(s) URL: write http://host:port"),
    ("ftp://example.com", "is not an http(s) URL"),
    ("http://:8080", "has no host name"),
])
def test_malformed_base_url_rejected_before_any_request(url, rule):
    proc = perflab("backfill", "--base-url", url, "--symbols", "AAPL", "--timeframes", "1d", *RANGE)
    assert proc.returncode == 2 and proc.stdout == ""  # nothing ran: no stage breakdown
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("perflab: error: base URL") and rule in lines[0], proc.stderr


@pytest.mark.parametrize("symbols, why", [
    ("AAPL;DROP TABLE market_data", "(it has ';')"),
    ("AAPL,ABCDEFGHIJKLMN", "(it is longer than 12 characters)"),
])
def test_malformed_ticker_rejected_before_any_request(sim, engine, symbols, why):
    requests_before, rows_before = sim.stats().get("requests", 0), bars_stored(engine)
    proc = perflab("backfill", "--base-url", sim.url, "--symbols", symbols, "--timeframes", "1d", *RANGE)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a Polygon ticker" in lines[0] and why in lines[0], proc.stderr
    assert "X:BTCUSD" in lines[0]  # the message names the rule, with examples
    assert sim.stats().get("requests", 0) == requests_before and bars_stored(engine) == rows_before


def test_unknown_ticker_is_named_and_a_known_one_is_not(sim):
    assert "ZZZZNOTREAL" not in sim.config.tickers  # the simulator answers it as Polygon does: OK, no results
    proc = perflab("backfill", "--base-url", sim.url, "--symbols", "AAPL,ZZZZNOTREAL", "--timeframes", "1d,1h",
                   *RANGE, "--fixes", "none")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert warnings == ["perflab: warning: ZZZZNOTREAL: no bars 2024-03-04..2024-03-05 — unknown ticker?"]


def test_python_m_perflab_runs_the_cli():
    proc = perflab("--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: perflab") and "backfill" in proc.stdout


def test_run_only_unknown_names_the_notebooks_that_exist():
    proc = perflab("run", "--only", "99")
    names = [nb.stem for nb in discover_notebooks()]
    assert proc.returncode == 2 and names
    assert proc.stderr.strip() == f"perflab: error: no notebook matches '99': choose from {', '.join(names)}"


def test_only_selects_by_number_or_name_in_suite_order():
    nbs = [Path(f"{n}.ipynb") for n in ("01_baseline", "02_profile", "03_path_a_api")]
    assert select_notebooks("3, 01", nbs) == [nbs[0], nbs[2]]
    assert select_notebooks("path_a_api,02_profile", nbs) == [nbs[1], nbs[2]]
    with pytest.raises(PerflabError, match="no notebook matches '04', 'x': choose from 01_baseline, 02_profile"):
        select_notebooks("04,1,x", nbs)


def job(symbol: str, tf: str = "1d", *, error: str | None = None, rows: int = 0, requests: int = 1) -> JobRecord:
    return JobRecord(symbol, tf, rows=rows, feature_rows=rows, requests=requests, error=error)


def run_of(*jobs: JobRecord) -> RunResult:
    workload = {"symbols": [], "timeframes": [], "start": "2024-03-04", "end": "2024-03-05"}
    return RunResult("r", "x", "2024-01-01T00:00:00+00:00", 1.0, {"workload": workload}, {}, list(jobs))


def test_failure_summary_groups_alike_failures_most_frequent_first():
    refused = "ConnectionError: cannot reach the API at http://h:1: connection refused"
    run = run_of(
        job("AAPL", error="ServerError: 503 server error on /v2/aggs/ticker/AAPL/range/1/day/2024-03-04/2024-03-05: "
                          "Service Unavailable"),
        job("I:SPX", error="ServerError: 503 server error on /v2/aggs/ticker/I:SPX/range/1/hour/2024-03-04/2024-03-05: "
                           "Service Unavailable"),
        job("MSFT", error=refused), job("NVDA", error=refused), job("TSLA", error=refused), job("AMD", rows=5))
    assert run.failure_summary() == [
        f"3 of 6 jobs failed: {refused}",
        "2 of 6 jobs failed: ServerError: 503 server error on /v2/aggs/...: Service Unavailable",
    ]
    assert run_of(job("AMD", rows=5)).failure_summary() == []


def test_empty_symbols_only_when_every_timeframe_succeeded_with_no_bars():
    run = run_of(job("ZZZZ", "1d"), job("ZZZZ", "1h"),  # unknown: asked twice, nothing came back
                 job("AAPL", "1d", rows=3), job("AAPL", "1h"),  # one timeframe had bars
                 job("BAD", "1d"), job("BAD", "1h", error="TimeoutError: no answer"),  # a failure is not "no bars"
                 job("DONE", "1d", requests=0))  # nothing to fetch (resume): not a sign of an unknown ticker
    assert run.empty_symbols() == ["ZZZZ"]
    assert run.warnings() == ["ZZZZ: no bars 2024-03-04..2024-03-05 — unknown ticker?"]


def test_refused_connection_reads_in_plain_words():
    with pytest.raises(ApiConnectionError) as info:
        PolygonClient("http://127.0.0.1:1/").get_aggregates("AAPL", 1, "day", "2024-03-04", "2024-03-05")
    assert str(info.value) == "cannot reach the API at http://127.0.0.1:1: connection refused"


@pytest.mark.parametrize("url, rule", [
    ("not-a-url", r"is not an http\(s\) URL"), ("localhost:8080", r"is not an http\(s\) URL"),
    ("http://", "has no host name"), ("http://h:99999", "port that is not a number"), ("http://h:0", "port"),
    ("http://h/x?apiKey=abcd1234", "query or fragment"), ("http://a b", "contains a space"),
])
def test_client_rejects_a_malformed_base_url(url, rule):
    with pytest.raises(InputError, match=rule) as info:
        PolygonClient(url, api_key=KEY)
    assert "abcd1234" not in str(info.value)


def test_client_rejects_a_malformed_base_url_from_the_environment(monkeypatch):
    monkeypatch.setenv("POLYGON_BASE_URL", "api.polygon.io")
    with pytest.raises(InputError, match=r"POLYGON_BASE_URL 'api\.polygon\.io' is not an http\(s\) URL"):
        PolygonClient(api_key=KEY)


@pytest.mark.parametrize("url, base", [("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
                                       (" https://api.polygon.io ", "https://api.polygon.io"),
                                       ("https://proxy.example/polygon/", "https://proxy.example/polygon")])
def test_client_accepts_http_urls_with_a_path_prefix(url, base):
    assert PolygonClient(url, api_key=KEY).base_url == base


def test_progress_bar_is_notebook_aware_and_lab_extra_has_widgets():
    import tqdm.auto

    from perflab.pipeline import scheduler

    assert scheduler.tqdm is tqdm.auto.tqdm
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("ipywidgets") for dep in project["optional-dependencies"]["lab"])


def test_workload_parse_dedupes_and_upper_cases():
    w = Workload.parse(["brk.b", "AAPL", "BRK.B"], ["1d"], "2024-03-04", "2024-03-05")
    assert w.symbols == ("BRK.B", "AAPL")
