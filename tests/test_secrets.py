"""A sentinel API key and DB password must appear nowhere a run writes or prints.

The sweep runs the whole suite (``perflab run --preset smoke``, about a minute) with a sentinel key and
password and searches every file it writes and everything it prints.
"""

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa

from perflab.redact import redact

KEY = "SENTINELKEY7f3a9c"
# Against a server with password auth (CI's), the real password is the sentinel; the embedded one ignores it.
PASSWORD = os.environ.get("PERFLAB_TEST_DB_PASSWORD") or "SENTINELPW-b41d"


def sentinel_env() -> dict:
    url = sa.engine.make_url(os.environ["PERFLAB_DATABASE_URL"]).set(password=PASSWORD)
    return {**os.environ, "POLYGON_API_KEY": KEY,
            "PERFLAB_DATABASE_URL": url.render_as_string(hide_password=False)}


def leaks(text: str) -> list[str]:
    return [s for s in (KEY, PASSWORD, quote(PASSWORD)) if s in text]


def test_redact_masks_the_environment_secrets(monkeypatch):
    for name, value in sentinel_env().items():
        monkeypatch.setenv(name, value)
    text = f"key {KEY} dsn {os.environ['PERFLAB_DATABASE_URL']} password={PASSWORD}"
    assert not leaks(redact(text)) and "***" in redact(text)


def test_sentinel_key_and_password_are_absent_from_everything_the_smoke_suite_writes(tmp_path):
    env = sentinel_env()
    proc = subprocess.run([sys.executable, "-m", "perflab.cli", "run", "--preset", "smoke",
                           "--reports", str(tmp_path)], capture_output=True, text=True, env=env, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = [p for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".html", ".ipynb", ".json"}
    for path in files:
        assert not leaks(path.read_text(errors="replace")), path
    assert not leaks(proc.stdout + proc.stderr)
