"""The embedded server's janitor: stops PostgreSQL once no process using it is alive.

pgserver stops the server from the exit handlers of its last user, but a user can die without running them
(SIGKILL, a Jupyter kernel SIGTERMed at shutdown), which left the postmaster running with no one to stop it.
One janitor per data folder (a lock file next to it says whether one runs) polls pgserver's list of users
(``.handle_pids.json``) and stops the server (PostgreSQL's fast shutdown) when none of them is alive, then exits.
It reads the list under pgserver's own lock, the one held while a process starts the server and adds itself,
so a process joining at that moment is never stopped under.

Run as ``python -m perflab.db.janitor PGDATA LOCK_FD``: it detaches (its own session, and a second fork so no
perflab process keeps it as a child) and holds the lock inherited through ``LOCK_FD`` for as long as it lives.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import psutil

try:
    import fcntl
except ImportError:  # Windows: no flock; pgserver's exit handlers are all there is
    fcntl = None

POLL_S = 0.5
SHUTDOWN_WAIT_S = 60.0

log = logging.getLogger(__name__)


def lock_path(pgdata: Path) -> Path:
    """The janitor's lock file, beside the data folder (initdb wants that folder to itself)."""
    return pgdata.with_name(f"{pgdata.name}.janitor.lock")


def is_alive(pid: int) -> bool:
    """True for a running process; a zombie (dead, not yet reaped by its parent) counts as dead."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def live_pids(pgdata: Path) -> list[int]:
    """The processes in pgserver's list of users of ``pgdata`` that are still alive."""
    try:
        pids = json.loads((pgdata / ".handle_pids.json").read_text())
    except (OSError, ValueError):
        return []
    return [p for p in pids if isinstance(p, int) and is_alive(p)]


def postmaster(pgdata: Path) -> psutil.Process | None:
    """The running postmaster of ``pgdata`` (from ``postmaster.pid``), or None when the server is down."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        proc = psutil.Process(pid)
        if proc.status() != psutil.STATUS_ZOMBIE and proc.name().startswith("postgres"):
            return proc
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def ensure_janitor(pgdata: Path) -> bool:
    """Start the janitor for ``pgdata`` unless one is running; True when this call started it.

    Call it holding pgserver's lock: a janitor gives up its own lock before pgserver's when it exits, so a
    caller that finds the janitor lock taken knows that janitor will still see its process in the list.
    """
    if fcntl is None:
        return False
    fd = os.open(lock_path(pgdata), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        # flock belongs to the open file, not the process: the janitor inherits the lock through fd
        with open(pgdata.with_name(f"{pgdata.name}.janitor.log"), "ab") as errors:
            done = subprocess.run([sys.executable, "-m", __name__, str(pgdata), str(fd)], pass_fds=(fd,),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                                  start_new_session=True, timeout=60, check=False)
        if done.returncode != 0:
            log.warning("the embedded server's janitor did not start (exit %s): see %s.janitor.log",
                        done.returncode, pgdata.name)
        return done.returncode == 0
    finally:
        os.close(fd)


def stop_server(proc: psutil.Process) -> None:
    """PostgreSQL's fast shutdown (SIGINT to the postmaster), then immediate (SIGQUIT), then SIGKILL."""
    for signum, wait_s in ((signal.SIGINT, SHUTDOWN_WAIT_S), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        try:
            proc.send_signal(signum)
            proc.wait(wait_s)
            return
        except psutil.NoSuchProcess:
            return
        except psutil.TimeoutExpired:
            continue


def watch(pgdata: Path, lock_fd: int, poll_s: float = POLL_S) -> None:
    """Poll until the server is down (its last user stopped it) or has no live user (stop it), then return."""
    from pgserver.postgres_server import PostgresServer

    server_lock = PostgresServer._lock  # the lock pgserver holds while it starts the server and adds a user
    while True:
        time.sleep(poll_s)
        with server_lock:
            proc = postmaster(pgdata)
            if proc is not None and live_pids(pgdata):
                continue
            if proc is not None:
                log.info("no live user of %s: stopping postmaster %s", pgdata, proc.pid)
                stop_server(proc)
                (pgdata / ".handle_pids.json").write_text("[]")
            os.close(lock_fd)  # before pgserver's lock is released: see ensure_janitor
            return


def main(argv: list[str]) -> int:
    """Detach (the caller waits only for this first process), then watch ``argv[0]`` holding lock fd ``argv[1]``."""
    pgdata, lock_fd = Path(argv[0]), int(argv[1])
    if os.fork():
        os._exit(0)
    os.chdir("/")
    warnings.simplefilter("ignore")  # pgserver's import warns about XDG_RUNTIME_DIR into the log
    logging.basicConfig(level=logging.INFO, format="%(asctime)s janitor %(process)d: %(message)s")
    watch(pgdata, lock_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
