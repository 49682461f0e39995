"""No orphans: whatever perflab starts (simulator, kernels, the embedded server) ends when its owner does,
however the owner ends (normally, SIGTERM, SIGINT, SIGKILL).

Each test starts the real command as a subprocess, collects the processes it started while it runs, ends it,
and checks with psutil that none of them is left (a zombie counts as gone: it holds no port and runs no code).
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import requests

from perflab.db.embedded import DATABASE_URL_ENV, HOME_ENV
from perflab.db.janitor import is_alive, lock_path, postmaster
from perflab.studies.lab import open_lab

CLI = [sys.executable, "-m", "perflab.cli"]
GRACE_S = 10.0


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in procs if is_alive(p.pid) and p.is_running()]


def wait_gone(procs: list[psutil.Process], timeout: float = GRACE_S) -> list[psutil.Process]:
    """The processes still alive after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while alive(procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive(procs)


def wait_for(what: str, check: Callable[[], object], timeout: float = 60.0, proc: subprocess.Popen | None = None):
    """Poll ``check`` until it returns something truthy; fail naming ``what`` (and the command's output)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := check()):
            return found
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the command ended (exit {proc.returncode}) before {what}: {proc.communicate()}")
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def read_line(proc: subprocess.Popen, timeout: float = 30.0) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no output line in time"
    return proc.stdout.readline().strip()


def children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def simulators(pid: int) -> list[psutil.Process]:
    return [p for p in children(pid) if "perflab.simulator.server" in " ".join(_cmdline(p))]


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def listening(proc: psutil.Process) -> bool:
    try:
        return any(c.status == psutil.CONN_LISTEN for c in proc.net_connections("tcp"))
    except psutil.Error:
        return False


def start(args: list[str], env: dict | None = None) -> subprocess.Popen:
    """The command in its own session, so a group signal (a terminal's Ctrl-C) reaches it and its children only, with
    Ctrl-C's default action: a shell ignores SIGINT in the background jobs it starts, and a test suite run as one
    would hand that on, so the command would never see the Ctrl-C these tests send as a user's terminal would."""
    return subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True, start_new_session=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def stop_with(proc: subprocess.Popen, how: str) -> None:
    """End ``proc`` as a user would: ``kill -TERM``/``kill -KILL`` on it, or Ctrl-C (SIGINT to its whole group)."""
    if how == "SIGINT":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(getattr(signal, how))


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "SIGKILL"])
def test_serve_leaves_no_simulator_behind(how):
    proc = start(["serve", "--preset", "smoke"])
    try:
        url = read_line(proc)
        assert requests.get(f"{url}/_stats", timeout=5).ok
        started = children(proc.pid)
        assert simulators(proc.pid), started
        stop_with(proc, how)
        proc.wait(GRACE_S)
        assert wait_gone(started) == [], f"left running after {how} of perflab serve"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/_stats", timeout=2)
    finally:
        proc.kill()
        proc.communicate()


BACKFILL = ["backfill", "--simulator", "--preset", "smoke", "--symbols", "AAPL", "--timeframes", "1d"]


def test_backfill_with_simulator_leaves_nothing_when_it_ends(engine):
    proc = start(BACKFILL)
    seen: dict[int, psutil.Process] = {}
    while proc.poll() is None:
        seen.update({p.pid: p for p in children(proc.pid)})
        time.sleep(0.01)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert seen, "no child process was seen: the backfill did not start its simulator"
    assert wait_gone(list(seen.values()), timeout=2) == []


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "SIGKILL"])
def test_backfill_with_simulator_ended_mid_run_leaves_no_simulator(engine, how):
    proc = start(BACKFILL)
    try:
        # Freeze the command the moment its simulator exists: it then ends mid-run, whatever the timing.
        sim = wait_for("the simulator to start", lambda: simulators(proc.pid), proc=proc)[0]
        proc.send_signal(signal.SIGSTOP)
        wait_for("the simulator to listen", lambda: listening(sim))
        started = children(proc.pid)
        stop_with(proc, how)
        proc.send_signal(signal.SIGCONT)  # a stopped process acts on its pending signal once continued
        proc.wait(GRACE_S)
        assert wait_gone(started) == [], f"left running after {how} of perflab backfill --simulator"
    finally:
        proc.kill()
        proc.communicate()


def _executed_a_cell(reports: Path) -> bool:
    """Papermill saved the output notebook with a cell run: the kernel is up and polls for its parent."""
    for nb in reports.glob("*/01_*.ipynb"):
        try:
            cells = json.loads(nb.read_text())["cells"]
        except (OSError, ValueError, KeyError):
            continue
        if any(c.get("execution_count") for c in cells):
            return True
    return False


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "SIGKILL"])
def test_run_ended_leaves_no_simulator_and_no_kernel(engine, tmp_path, how):
    proc = start(["run", "--preset", "smoke", "--only", "01", "--reports", str(tmp_path)])
    try:
        wait_for("a notebook cell to run", lambda: _executed_a_cell(tmp_path), timeout=120, proc=proc)
        started = children(proc.pid)
        assert simulators(proc.pid), started
        assert [p for p in started if "ipykernel" in " ".join(_cmdline(p))], started
        stop_with(proc, how)
        proc.wait(GRACE_S)
        assert wait_gone(started) == [], f"left running after {how} of perflab run"
    finally:
        proc.kill()
        proc.communicate()


# The embedded server: each test gets its own PERFLAB_HOME, so its own server, which no other process uses.

def embedded_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != DATABASE_URL_ENV}
    return {**env, HOME_ENV: str(home)}


def handle_pids(pgdata: Path) -> list[int]:
    return json.loads((pgdata / ".handle_pids.json").read_text())


def janitor_running(pgdata: Path) -> bool:
    with open(lock_path(pgdata), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


USER = ("import time; from perflab.db.embedded import embedded_url; embedded_url(); print('up', flush=True); "
        "time.sleep(120)")


def test_janitor_stops_the_embedded_server_once_its_last_user_is_killed(tmp_path):
    pgdata = (tmp_path / "pgdata").resolve()
    users = [subprocess.Popen([sys.executable, "-c", USER], stdout=subprocess.PIPE, text=True,
                              env=embedded_env(tmp_path)) for _ in range(2)]
    try:
        for user in users:
            assert read_line(user, timeout=90) == "up"
        server = postmaster(pgdata)
        assert server is not None
        assert sorted(handle_pids(pgdata)) == sorted(u.pid for u in users)
        assert janitor_running(pgdata)

        users[0].kill()
        users[0].wait()
        time.sleep(1.5)  # three janitor polls: one user is still alive, so the server stays
        assert server.is_running()

        users[1].kill()
        users[1].wait()
        assert wait_gone([server], timeout=20) == [], "the embedded server outlived every process using it"
        wait_for("the janitor to exit", lambda: not janitor_running(pgdata), timeout=5)
        assert handle_pids(pgdata) == []
    finally:
        for user in users:
            user.kill()
            user.wait()


def test_kernel_that_opened_a_lab_shuts_down_cleanly_and_quickly(tmp_path):
    from jupyter_client import KernelManager

    pgdata = (tmp_path / "pgdata").resolve()
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=embedded_env(tmp_path), cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        out: list[str] = []
        reply = kc.execute_interactive(
            "from perflab.studies.lab import open_lab; lab = open_lab('smoke'); print(lab.out_dir)", timeout=120,
            output_hook=lambda msg: out.append(msg["content"].get("text", "")))
        assert reply["content"]["status"] == "ok", reply["content"]
        kernel = km.provisioner.process
        started = children(kernel.pid)
        assert simulators(kernel.pid), started
        assert kernel.pid in handle_pids(pgdata)
        out_dir = Path("".join(out).strip())
        assert out_dir.is_dir()
        server = postmaster(pgdata)
        assert server is not None

        began = time.monotonic()
        km.shutdown_kernel(now=False)
        took = time.monotonic() - began
    finally:
        kc.stop_channels()
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    # jupyter_client sends SIGTERM after 2.5 s: exit code 0 means the kernel ended by itself, before that
    assert kernel.returncode == 0 and took < 8, f"kernel exit {kernel.returncode} after {took:.1f}s"
    assert wait_gone(started) == [], "the simulator outlived its kernel"
    assert kernel.pid not in handle_pids(pgdata)
    assert wait_gone([server]) == [], "the embedded server outlived its only user"
    assert not out_dir.exists(), "the lab's temporary out_dir outlived its kernel"


def test_temporary_out_dirs_go_with_their_lab_or_with_the_next_one_when_killed(engine, sim):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = Path(tempfile.gettempdir()) / f"perflab-{int(gone.stdout)}-abcdefgh"  # a lab whose kernel was killed
    running = Path(tempfile.gettempdir()) / f"perflab-{os.getpid()}-abcdefgh"  # one whose process still runs
    try:
        for folder in (killed, running):
            folder.mkdir()
            (folder / "baseline.json").write_text("{}")
        lab = open_lab("smoke", sim.url)
        out = lab.out_dir
        assert lab.temporary and out.name.startswith(f"perflab-{os.getpid()}-")
        assert str(out) in lab.where(out / "PERFORMANCE_RESULTS.md")
        assert not killed.exists() and running.exists()
        del lab
        gc.collect()
        assert not out.exists()
    finally:
        for folder in (killed, running):
            if folder.exists():
                (folder / "baseline.json").unlink()
                folder.rmdir()
