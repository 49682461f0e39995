import subprocess
import sys

import pytest


def perflab(*args, env=None):
    import os

    return subprocess.run([sys.executable, "-m", "perflab.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args, env, match", [
    (["backfill", "--simulator", "--timeframes", "7m"], {}, "unknown timeframe"),
    (["backfill", "--simulator", "--from", "2024-03-05", "--to", "2024-03-01"], {}, "after"),
    (["backfill", "--simulator", "--symbols", ""], {}, "no symbols given"),
    (["backfill", "--simulator", "--symbols", "AAPL,,MSFT"], {}, "empty symbol"),
    (["backfill"], {"POLYGON_BASE_URL": "https://api.polygon.io", "POLYGON_API_KEY": ""}, "POLYGON_API_KEY"),
    (["backfill", "--simulator"], {"PERFLAB_DATABASE_URL": "postgresql://u:s3cretpw@127.0.0.1:1/x"},
     "cannot reach the database"),
])
def test_bad_input_is_one_clear_line(args, env, match):
    proc = perflab(*args, env=env)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and match in lines[0] and lines[0].startswith("perflab: error:")
    assert "Traceback" not in proc.stderr and "s3cretpw" not in proc.stderr + proc.stdout


def test_serve_prints_its_url():
    proc = subprocess.Popen([sys.executable, "-m", "perflab.cli", "serve", "--port", "0", "--preset", "smoke"],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        import requests

        assert requests.get(url + "/_stats", timeout=5).ok
    finally:
        proc.terminate()
        proc.wait(10)


def test_simulator_and_base_url_together_are_refused():
    proc = perflab("backfill", "--simulator", "--base-url", "http://127.0.0.1:8080")
    assert proc.returncode == 2 and "--base-url: not allowed with argument --simulator" in proc.stderr
