"""Start and stop the simulator in its own process (never a thread: the GIL would distort timings)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Self

import requests

from perflab.errors import PerflabError
from perflab.simulator.config import SimulatorConfig
from perflab.simulator.server import CONFIG_ENV


def fetch_stats(base_url: str) -> dict:
    """A simulator's ``/_stats`` counters; empty for a server that has none (the real API)."""
    try:
        resp = requests.get(f"{base_url}/_stats", timeout=5)
        return resp.json() if resp.ok else {}
    except (requests.RequestException, ValueError):
        return {}


@dataclass
class SimulatorProcess:
    """A running simulator: its base URL, its config, and the child process behind it."""

    url: str
    config: SimulatorConfig
    process: subprocess.Popen

    def stats(self) -> dict:
        """The server's own counters (requests, statuses, bars and bytes served)."""
        return fetch_stats(self.url)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_simulator(config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> SimulatorProcess:
    """Launch ``python -m perflab.simulator.server`` and wait for its URL; use as a context manager."""
    config = config or SimulatorConfig()
    env = {**os.environ, CONFIG_ENV: config.to_json()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "perflab.simulator.server", "--host", host, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, text=True,
    )
    line = proc.stdout.readline().strip()
    if not line.startswith("perflab simulator listening on "):
        proc.kill()
        err = proc.stderr.read().strip().splitlines()
        raise PerflabError(f"simulator did not start: {err[-1] if err else 'no output'}")
    proc.stderr.close()
    return SimulatorProcess(line.rsplit(" ", 1)[1], config, proc)
