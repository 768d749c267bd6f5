"""Shared test helpers: run pl_submit for real and prove nothing it started is left running.

Every process elearn starts (ZooKeeper and Spark JVMs, Spark's Python workers, daemons, TF servers)
inherits the environment of ``pl_submit``; a unique ``ELEARN_TEST_TAG`` in it lets a test find all
of them in /proc afterwards, whatever their parentage.
"""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBS = os.path.join(ROOT, "tests", "jobs")
PL_SUBMIT = [sys.executable, "-m", "plsubmit.cli"]


def tagged_pids(tag: str) -> list[int]:
    found = []
    needle = f"ELEARN_TEST_TAG={tag}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def cmdline(pid) -> str:
    """The command line of ``pid``, words joined by spaces ("" once it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def environ(pid) -> str:
    """The environment of ``pid`` as one string ("" once it is gone)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def tf_node(tag: str, role: str, index: int) -> int | None:
    """The TF server process of node ``role:index`` of the run tagged ``tag`` (None: not running)."""
    want = f'"role": "{role}", "index": {index}'
    return next((p for p in tagged_pids(tag) if "elearn.runtime.tf_server" in cmdline(p)
                 and want in environ(p)), None)


def trainer(tag: str, index: int) -> int | None:
    """The training process of allreduce worker ``index`` of the run tagged ``tag``."""
    want = f'"task": {{"type": "worker", "index": {index}}}'
    return next((p for p in tagged_pids(tag) if "elearn.train.trainer" in cmdline(p)
                 and want in environ(p)), None)


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def timed_out(what: str):
    """``on_timeout`` for ``elearn.cluster.waits.wait_until`` in a test: fail naming the wait."""
    return lambda: AssertionError(f"timed out waiting for {what}")


def describe(pids) -> str:
    return "\n".join(f"{pid}: {cmd[:200]}" for pid in pids if (cmd := cmdline(pid)))


def assert_no_orphans(tag: str, timeout: float = 30.0, only: tuple[bytes, ...] = ()) -> None:
    """Every process carrying ``tag`` is gone within ``timeout`` (polled, not slept). With
    ``only``, just those whose command line holds one of these words: elearn's processes where
    the test's own ones (a notebook kernel, a Spark Connect server) rightly live on."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in tagged_pids(tag) if alive_pid(p) and (not only or _runs(p, only))]
        if not alive:
            return
        if time.monotonic() > deadline:
            text = describe(alive)
            for pid in alive:  # don't let one failure poison the following tests
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            raise AssertionError(f"processes left running after pl_submit exited:\n{text}")
        time.sleep(0.2)


def _runs(pid: int, words: tuple[bytes, ...]) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return False
    return any(w in cmd for w in words)


def alive_pid(pid: int) -> bool:
    """``pid`` runs: it exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Run:
    def __init__(self, tag, proc, workdir):
        self.tag, self.proc, self.workdir = tag, proc, workdir
        self.stdout = self.stderr = ""

    @property
    def returncode(self):
        return self.proc.returncode

    @property
    def output(self):
        return self.stdout + self.stderr

    def app_dirs(self):
        root = os.path.join(self.workdir, "apps")
        return [os.path.join(root, d) for d in os.listdir(root)] if os.path.isdir(root) else []


_STARTED: list = []


@pytest.fixture(autouse=True)
def _stop_leftover_runs():
    """A test that fails while its pl_submit runs must not leave that application running."""
    yield
    while _STARTED:
        run = _STARTED.pop()
        if run.proc.poll() is None:
            try:
                os.killpg(run.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            run.proc.wait(30)
        for pid in tagged_pids(run.tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def start_pl_submit(args, tmp_path, env=None) -> Run:
    tag = uuid.uuid4().hex
    full_env = {**os.environ, "ELEARN_TEST_TAG": tag, "ELEARN_HOME": str(tmp_path),
                "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
                **(env or {})}
    proc = subprocess.Popen(PL_SUBMIT + [str(a) for a in args], env=full_env, cwd=str(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    run = Run(tag, proc, str(tmp_path))
    _STARTED.append(run)
    return run


def finish(run: Run, timeout: float = 300) -> Run:
    try:
        run.stdout, run.stderr = run.proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(run.proc.pid, signal.SIGKILL)
        run.stdout, run.stderr = run.proc.communicate()
        raise AssertionError(f"pl_submit did not finish within {timeout}s:\n{run.stdout}\n{run.stderr}")
    return run


@pytest.fixture
def pl_submit(tmp_path):
    """``pl_submit(*args, timeout=..., env=...)`` runs the CLI to completion and checks for orphans."""
    runs = []

    def go(*args, timeout=300, env=None, check_orphans=True):
        run = finish(start_pl_submit(args, tmp_path, env), timeout)
        runs.append(run)
        if check_orphans:
            assert_no_orphans(run.tag)
        return run

    yield go


def run_saver(argv, kill_after=None, delay=0.0) -> tuple[int, list[int]]:
    """Run a process that prints ``<word> <step>`` after each checkpoint it completes: its exit
    code and the steps it reported, in order. With ``kill_after`` it is SIGKILLed ``delay`` seconds
    after reporting that step, inside the save it starts next; the steps it reported before it died
    are all read."""
    proc = subprocess.Popen(argv, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, stdout=subprocess.PIPE,
                            text=True)
    steps = []
    try:
        for line in proc.stdout:
            steps.append(int(line.split()[1]))
            if steps[-1] == kill_after:
                time.sleep(delay)  # the fault's place in the next save; what it left is checked after
                proc.send_signal(signal.SIGKILL)
                steps += [int(rest.split()[1]) for rest in proc.stdout]
                break
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, steps


@pytest.fixture
def no_java(tmp_path):
    """An environment whose only ``java`` records being run (on PATH and as JAVA_HOME's): the
    proof that nothing started a JVM, checked when the test ends."""
    home = tmp_path / "fake-java"
    (home / "bin").mkdir(parents=True)
    marker = tmp_path / "java-was-run"
    fake = home / "bin" / "java"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f"{home / 'bin'}:{os.environ['PATH']}", JAVA_HOME=str(home),
               ELEARN_HOME=str(tmp_path / "home"))
    yield env
    assert not marker.exists(), "a JVM was started"


def only_java(env: dict) -> dict:
    """The ``no_java`` fixture's changes alone, for ``pl_submit(..., env=)``."""
    return {k: env[k] for k in ("PATH", "JAVA_HOME")}


def job(name: str) -> str:
    return os.path.join(JOBS, name)


def lines(path) -> list:
    """The records of a JSON-lines file a test job wrote (none yet: empty)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="session")
def local_spark():
    """One in-process ``local[2]`` SparkSession for the tests that need Spark but not pl_submit.

    Modules set the SQL options they depend on with ``spark_with``; the JVM starts once.
    """
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable  # executors need this venv's TF and pyarrow
    session = (SparkSession.builder.master("local[2]").appName("elearn-tests")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.pyspark.python", sys.executable).getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def spark_with(session, **sql_conf):
    """Set SQL options for one module's tests; a generator to ``yield from`` in its fixture."""
    keys = {k.replace("__", "."): str(v) for k, v in sql_conf.items()}
    for k, v in keys.items():
        session.conf.set(k, v)
    try:
        yield session
    finally:
        for k in keys:
            session.conf.unset(k)


# -- running the suite on two xdist workers (python -m pytest tests -n 2) --------------------------
# Most of a test's time is a JVM, TF imports and ZooKeeper sessions waiting on each other, so two
# tests side by side on 2 cores finish well before two in a row. Each module stays on one worker
# (its module-scoped servers start once; its timing bounds see at most one neighbour), and all the
# modules of the simulated cluster form one unit: its network namespaces and its sweep of leftovers
# are host-wide, so two of them must never run at once. That unit, the longest, is collected first,
# so it starts at once and the other modules fill the second worker.
def _simulated_cluster_modules() -> set[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    return {name for name in os.listdir(here) if name.startswith("test_") and name.endswith(".py")
            and "pytest.mark.multihost" in open(os.path.join(here, name)).read()}


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    cluster_modules = _simulated_cluster_modules()

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "simulated cluster" if os.path.basename(module) in cluster_modules else module

    return ByModule(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("multihost") is None)  # stable otherwise
