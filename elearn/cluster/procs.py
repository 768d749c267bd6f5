"""Child processes that cannot outlive their parent, and free ports."""
from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time

# The child's first moments, as a tiny Python program that then execs the real command. It asks the
# kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG, kept across exec), so no TF server, JVM
# or ZooKeeper is orphaned, even by a SIGKILLed parent (one already gone by then: exit at once); and
# it ignores SIGINT, also kept across exec, because Ctrl-C in a terminal goes to the whole foreground
# group and the parent decides when its children stop. Not a ``preexec_fn``: Python code between
# fork and exec is unsafe in a threaded parent, and the fork it needs runs every library's fork
# handlers. A Spark Connect client's gRPC threads, for one, restart in the forked child and broke
# it before exec (the parent saw a started process, then a broken pipe).
_GUARD = """\
import ctypes, os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
except OSError:
    pass
if os.getppid() != int(sys.argv[1]):
    os._exit(1)
os.execvp(sys.argv[2], sys.argv[2:])
"""


def popen_child(cmd, **kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` for a child that dies with its parent and ignores terminal Ctrl-C.

    ``cmd`` runs through :data:`_GUARD` (``python -I -S``, a few milliseconds) in the same process:
    the pid is the command's, and its command line keeps every word of ``cmd``."""
    argv = [sys.executable, "-I", "-S", "-c", _GUARD, str(os.getpid()), *[str(c) for c in cmd]]
    # EFAULT ("Bad address") from the vfork-based spawn, seen in the suite when pyspark started the
    # driver JVM from another thread at the same moment as the embedded ZooKeeper: transient, the
    # same call succeeds right after. Two retries; any other error, or a third EFAULT, is raised.
    for delay in (0.05, 0.1):
        try:
            return subprocess.Popen(argv, **kwargs)
        except OSError as err:
            if err.errno != errno.EFAULT:
                raise
            time.sleep(delay)
    return subprocess.Popen(argv, **kwargs)


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


# TensorFlow reads these when it makes its thread pools (tensorflow/core/common_runtime/process_util.cc).
TF_THREAD_VARS = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def tf_thread_env(cores: int, env) -> dict:
    """The thread-pool sizes for a TF process given ``cores`` CPUs, unless ``env`` sets them.

    Left alone, every TF process sizes both pools to the whole host: on a 32-core host running eight
    one-core executors' worth of TF servers, that is 8 x 32 compute threads contending for 8 cores,
    and here (2 cores) a PS, a worker and the coordinator each ran 2 compute threads. So a process
    gets as many compute (intra-op) threads as the cores Spark gave its task (``spark.task.cpus``,
    or the executor's cores with executor shapes) and as many inter-op threads, at least 2, so
    independent ops (a PS answering two workers) do not queue behind one another. Setting either
    variable yourself (``spark.executorEnv.TF_NUM_INTRAOP_THREADS``) wins.
    """
    cores = max(1, int(cores))
    wanted = dict(zip(TF_THREAD_VARS, (str(cores), str(max(2, cores)))))
    return {k: v for k, v in wanted.items() if k not in env}
