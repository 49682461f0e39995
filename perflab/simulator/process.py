"""Start and stop the simulator in its own process (never a thread: the GIL would distort timings).

The child never outlives its parent (:mod:`perflab.simulator.lifeline`), is stopped at the parent's exit,
and is reaped as soon as it ends, so no zombie keeps a Jupyter kernel's shutdown waiting on it.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Self

import requests

from perflab.errors import PerflabError
from perflab.simulator import lifeline
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
        """Terminate and reap the child (idempotent; also runs at the parent's exit)."""
        atexit.unregister(self.stop)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe:
                pipe.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _reap(proc: subprocess.Popen) -> None:
    """Wait for ``proc`` in a daemon thread so it is reaped the moment it exits, whoever signalled it.

    An unreaped (zombie) child still counts as a child: ipykernel's shutdown signals its children until none
    is left, and waited ~29 s on a simulator that had long exited.
    """
    threading.Thread(target=proc.wait, name=f"perflab-reap-{proc.pid}", daemon=True).start()


def start_simulator(config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> SimulatorProcess:
    """Launch ``python -m perflab.simulator.server`` and wait for its URL; use as a context manager."""
    config = config or SimulatorConfig()
    env = {**os.environ, CONFIG_ENV: config.to_json()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "perflab.simulator.server", "--host", host, "--port", str(port),
         *lifeline.parent_args()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.PIPE, env=env, text=True,
    )
    line = proc.stdout.readline().strip()
    if not line.startswith("perflab simulator listening on "):
        proc.kill()
        err = proc.stderr.read().strip().splitlines()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()
        raise PerflabError(f"simulator did not start: {err[-1] if err else 'no output'}")
    proc.stderr.close()
    _reap(proc)
    sim = SimulatorProcess(line.rsplit(" ", 1)[1], config, proc)
    atexit.register(sim.stop)
    return sim
