"""Tie a child process's life to its parent's, so nothing perflab starts outlives it (no orphans).

The parent keeps the write end of the child's stdin pipe and never writes to it; the child takes end-of-file
on stdin to mean its parent is gone (on any OS, however the parent died, SIGKILL included). On Linux the child
also asks the kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), but only when the parent launched
it from its main thread: the signal fires when the launching *thread* exits, and a worker thread that starts a
simulator (``chaos.SimulatorOutage``) ends long before its process does.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

PARENT_PID_ARG = "--parent-pid"
PDEATHSIG_ARG = "--pdeathsig"
_PR_SET_PDEATHSIG = 1


def parent_args() -> list[str]:
    """Command-line arguments a parent adds for its child (which must get ``stdin=subprocess.PIPE``)."""
    args = [PARENT_PID_ARG, str(os.getpid())]
    if threading.current_thread() is threading.main_thread():
        args.append(PDEATHSIG_ARG)
    return args


def _set_pdeathsig(signum: int) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent dies; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_stdin() -> None:
    """Block on stdin until end-of-file (the parent's end closed: it died or stopped us), then SIGTERM ourselves."""
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def exit_with_parent(parent_pid: int, pdeathsig: bool) -> None:
    """In the child, right at startup: get SIGTERM once ``parent_pid`` is gone; ignore group interrupts.

    SIGINT is ignored because a terminal's Ctrl-C or a Jupyter kernel interrupt goes to the whole process
    group: the parent decides when its child stops (``SimulatorProcess.stop``), not a keypress meant for it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if pdeathsig:
        _set_pdeathsig(signal.SIGTERM)
    threading.Thread(target=_watch_stdin, name="perflab-lifeline", daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the watches were in place
        os.kill(os.getpid(), signal.SIGTERM)


def exit_on_sigterm() -> None:
    """Make SIGTERM exit like ``sys.exit`` (``with`` blocks, ``finally`` and atexit handlers run), not die on the spot.

    Only from the main thread and only where SIGTERM still has its default action: a program that installed
    its own handler keeps it. The handler works once: where the exit is caught (IPython turns a ``SystemExit``
    raised inside a running cell into an error message), a second SIGTERM ends the process as before.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_system_exit)


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """:func:`exit_on_sigterm` for the length of a ``with`` block only, for code that runs inside another program
    (``run_suite`` under pytest): the host's own SIGTERM behaviour comes back afterwards."""
    previous = signal.getsignal(signal.SIGTERM)
    exit_on_sigterm()
    try:
        yield
    finally:
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


def _raise_system_exit(signum: int, frame) -> None:
    signal.signal(signum, signal.SIG_DFL)
    raise SystemExit(128 + signum)
