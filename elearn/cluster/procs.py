"""Child processes that cannot outlive their parent, and free ports."""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if our parent dies (even by SIGKILL) the kernel
    # sends us SIGKILL, so no TF server, JVM or daemon is orphaned.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass
    # Ctrl-C in a terminal goes to the whole foreground group; the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def popen_child(cmd, **kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` for a child that dies with its parent and ignores terminal Ctrl-C."""
    return subprocess.Popen(cmd, preexec_fn=_die_with_parent, **kwargs)


def stop_process(proc: subprocess.Popen, grace: float = 5.0) -> int | None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        except ProcessLookupError:
            pass
    return proc.returncode


def exit_when_parent_goes(code: int = 0) -> None:
    """In a child started with ``stdin=PIPE``: exit once the parent's end of stdin closes.

    A second guard beside PDEATHSIG, for the case where the parent thread that started us is
    still alive but the parent process has given up on us. Starts a daemon thread and returns.
    """
    import sys
    import threading

    def watch():
        try:
            while sys.stdin.buffer.read(1 << 16):
                pass
        finally:
            os._exit(code)

    threading.Thread(target=watch, name="elearn-parent-watch", daemon=True).start()


def free_port(host: str = "") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, exited but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def describe_exit(code: int | None) -> str:
    """``-9`` -> ``"killed by SIGKILL"``; ``1`` -> ``"exited with code 1"``."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"
