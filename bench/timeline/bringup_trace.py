"""Trace of one submit's bring-up, written from inside every Python process it starts.

Nothing in elearn is edited for it: an import hook times the imports that matter (TensorFlow,
pyspark, ...) and, as each elearn module finishes loading, wraps the functions that mark the steps
of a bring-up (waits, registrations, the cluster spec, TF servers, probes) so that each call
appends one JSON line ``{"pid", "kind", "name", "t", "end"}`` to the trace file. Modules of elearn
import these functions by name (``from elearn.waits import wait_until``), so the wrapper has to be
in place before any other module imports it: that is why it happens in the import hook.

A name that is not there (an older elearn, a function since renamed) is skipped, so the same hook
traces older commits too. Appending one short line per ``os.write`` with ``O_APPEND`` keeps the
lines of concurrent processes whole.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time

_fd = None
_tls = threading.local()

# Top-level modules whose first import in a process is timed.
IMPORTS = {"tensorflow", "tf_keras", "keras", "pyspark", "pyarrow", "numpy", "pandas", "kazoo",
           "elearn", "plsubmit", "py4j", "grpc", "fire", "rich"}


def emit(kind: str, name: str, t: float | None = None, end: float | None = None, **more) -> None:
    rec = {"pid": os.getpid(), "kind": kind, "name": name, "t": round(t or time.time(), 4)}
    if end is not None:
        rec["end"] = round(end, 4)
    rec.update(more)
    try:
        os.write(_fd, (json.dumps(rec, default=str) + "\n").encode())
    except (OSError, TypeError):
        pass


def _proc_start() -> float | None:
    """When this process was created (exec or fork), from /proc: exact to a clock tick."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration):
        return None


def _cmdline() -> list:
    try:
        with open("/proc/self/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return list(sys.argv)


# -- spans: a wrapped function records when it was entered and left -------------------------------

def _label(label, args, kwargs) -> str:
    return label(*args, **kwargs) if callable(label) else label


def span(label, fn, kind="span"):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            try:
                name = _label(label, args, kwargs)
            except Exception:
                name = getattr(fn, "__qualname__", "?")
            emit(kind, name, t0, time.time())
    wrapper.__wrapped_by_trace__ = True
    return wrapper


def event(label, fn):
    """Record the moment ``fn`` returns (a registration, a published spec)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        try:
            emit("event", _label(label, args, kwargs))
        except Exception:
            pass
        return out
    return wrapper


def _wait_name(check, *args, **kwargs) -> str:
    return "wait " + getattr(check, "__qualname__", repr(check))


def _node(task) -> str:
    return f"{task.role}:{task.index}"


def _set_label(fn):
    """NodeTask.__init__: name this (forked Spark worker) process after its node."""
    @functools.wraps(fn)
    def wrapper(self, spec, role, index, *args, **kwargs):
        emit("label", f"node task {role}:{index}")
        return fn(self, spec, role, index, *args, **kwargs)
    return wrapper


def _server_init(fn):
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        t0 = time.time()
        try:
            return fn(self, *args, **kwargs)
        finally:
            emit("span", "tf.distribute.Server start", t0, time.time())
    return wrapper


# module -> [(attribute path, how)]; how: a label (span), ("event", label), or a wrapper factory
PATCHES = {
    "elearn.waits": [("wait_until", _wait_name)],
    "elearn.nodejobs": [("wait_for_nodes", lambda app, role, *a, **k: f"wait_for_nodes {role}"),
                        ("start_node_job", ("event", lambda app, role, *a, **k: f"start_node_job {role}"))],
    "elearn.peers": [("unreachable", lambda peers, *a, **k: "peer probes " + ",".join(peers))],
    "elearn.app": [("Application.start", "Application.start"),
                   ("Application.build_session", "Application.build_session"),
                   ("Application.start_zookeeper", "Application.start_zookeeper"),
                   ("Application.check_locations", "Application.check_locations"),
                   ("Application.ship_code", "Application.ship_code"),
                   ("Application.start_file_service", "Application.start_file_service"),
                   ("Application.release_nodes", "Application.release_nodes"),
                   ("Application.close", "Application.close"),
                   ("Application.mark", ("event", lambda self, phase: f"phase {phase}"))],
    "elearn.session": [("build_session", "session.build_session")],
    "elearn.jvmcache": [("SparkClassCache.finish", "SparkClassCache.finish")],
    "elearn.zookeeper": [("EmbeddedZooKeeper.start", "EmbeddedZooKeeper.start"),
                         ("EmbeddedZooKeeper.stop", "EmbeddedZooKeeper.stop"),
                         ("connect", "zookeeper.connect")],
    "elearn.submit": [("_pre_train", "submit._pre_train"), ("_post_train", "submit._post_train"),
                      ("_finish", "submit._finish"), ("_report", "submit._report")],
    "elearn.job": [("load_job_class", "load_job_class")],
    "elearn.feed": [("plan_feed", "plan_feed")],
    "elearn.shares": [("share_keys", "shares.share_keys"), ("take_places", "shares.take_places")],
    "elearn.ps.driver": [("run_ps", "run_ps"), ("form_cluster", "form_cluster"),
                         ("CoordinatorProcess.__init__", "CoordinatorProcess start"),
                         ("CoordinatorProcess.configure", "CoordinatorProcess.configure"),
                         ("CoordinatorProcess.stop", "CoordinatorProcess.stop"),
                         ("_launch", "_launch node jobs")],
    "elearn.resources_profile": [("build_profiles", "build_profiles")],
    "elearn.ps.node": [("start_server", lambda task: f"start_server {_node(task)}"),
                       ("serve", lambda task: f"serve {_node(task)}"),
                       ("_serve_spec", lambda task, *a, **k: f"serve_spec {_node(task)}"),
                       ("_check_reach", lambda task, *a, **k: f"check_reach {_node(task)}"),
                       ("_wait_spec", lambda task, *a, **k: f"wait_spec {_node(task)}")],
    "elearn.runtime.node_task": [
        ("NodeTask.__init__", _set_label),
        ("NodeTask.run", lambda self, *a, **k: f"NodeTask.run {_node(self)}"),
        ("NodeTask.join", lambda self: f"NodeTask.join {_node(self)}"),
        ("NodeTask.spool", lambda self, *a, **k: f"NodeTask.spool {_node(self)}"),
        ("NodeTask._check_driver_files", lambda self: f"check_driver_files {_node(self)}"),
        ("NodeTask.announce", ("event", lambda self, state, **k: f"announce {_node(self)} {state}")),
        ("NodeTask.update", ("event", lambda self, state, **k: f"update {_node(self)} {state}")),
        ("NodeTask.start_child", ("event", lambda self, module, *a, **k: f"start_child {_node(self)} {module}")),
        ("wait_listening", lambda host, port, *a, **k: f"wait_listening {host}:{port}")],
    "elearn.mounts": [("check_marks", "check_marks")],
    "elearn.ps": [("PSBackend.prepare_process", ("event", "trainer: config read")),
                  ("PSBackend.strategy", "PSBackend.strategy")],
    "elearn.ps.strategy": [("build_strategy", "build_strategy")],
    "elearn.tfimport": [("import_tensorflow", "import_tensorflow")],
    "elearn.context": [("TrainContext.record", ("event", lambda self, kind, **k: f"ctx.record {kind}"))],
    "elearn.registry": [("AppRegistry.publish_cluster", ("event", "publish_cluster")),
                        ("AppRegistry.set_state", ("event", lambda self, state, **k: f"app state {state}"))],
    "elearn.export": [("export_model", "export_model")],
    "elearn.runtime.partition": [("spool_partition", "spool_partition")],
    "tensorflow.python.training.server_lib": [("Server.__init__", _server_init)],
    "elearn.sparkops": [("SparkOps.map_in_arrow", "SparkOps.map_in_arrow (node job)"),
                        ("SparkOps.__init__", "SparkOps()"), ("SparkOps.can_shape", "SparkOps.can_shape"),
                        ("SparkOps.watch_progress", "SparkOps.watch_progress"),
                        ("SparkOps.add_py_files", "SparkOps.add_py_files")],
    "elearn.shipping": [("pack_job", "pack_job"), ("unpack_job", "unpack_job")],
    "elearn.keras_fit": [("instrument", "keras_fit.instrument")],
    "tensorflow.python.distribute.coordinator.cluster_coordinator": [
        ("ClusterCoordinator.__init__", "ClusterCoordinator()"),
        ("ClusterCoordinator.create_per_worker_dataset", "create_per_worker_dataset"),
        ("ClusterCoordinator.schedule", "coordinator.schedule"),
        ("ClusterCoordinator.join", "coordinator.join")],
    "tensorflow.python.distribute.parameter_server_strategy_v2": [
        ("ParameterServerStrategyV2.__init__", "ParameterServerStrategy()")],
    "pyspark.java_gateway": [("launch_gateway", "pyspark launch_gateway (driver JVM)")],
    "pyspark.sql.session": [("SparkSession.Builder.getOrCreate", "SparkSession getOrCreate")],
}


# The same functions after elearn's modules moved into folders by the process that runs them.
MOVED = {"elearn.waits": "elearn.cluster.waits", "elearn.nodejobs": "elearn.driver.nodejobs",
         "elearn.peers": "elearn.cluster.peers", "elearn.app": "elearn.driver.app",
         "elearn.session": "elearn.driver.session", "elearn.jvmcache": "elearn.driver.jvmcache",
         "elearn.zookeeper": "elearn.cluster.zookeeper", "elearn.feed": "elearn.feed.plan",
         "elearn.shares": "elearn.feed.shares", "elearn.sparkops": "elearn.driver.sparkops",
         "elearn.shipping": "elearn.train.shipping", "elearn.keras_fit": "elearn.train.keras_fit",
         "elearn.resources_profile": "elearn.driver.shapes", "elearn.mounts": "elearn.storage.mounts",
         "elearn.tfimport": "elearn.train.tfimport", "elearn.context": "elearn.train.context",
         "elearn.registry": "elearn.cluster.registry", "elearn.export": "elearn.train.export",
         "elearn.runtime.partition": "elearn.feed.partition", "elearn.job": "elearn.driver.jobfile"}
for _old, _new in MOVED.items():
    PATCHES.setdefault(_new, PATCHES[_old])
# ctx's event record became private (TrainContext._record); the trace's label stays the same.
PATCHES["elearn.train.context"] = PATCHES["elearn.context"] + [
    ("TrainContext._record", ("event", lambda self, kind, **k: f"ctx.record {kind}"))]
# The training process started with its environment, reading its payload on stdin.
PATCHES["elearn.train.launch"] = [
    ("read_payload", ("event", "trainer: config read")),
    ("TrainerProcess.__init__", "CoordinatorProcess start"),
    ("TrainerProcess.send", "CoordinatorProcess.configure")]


def _apply(name: str, module) -> None:
    for path, how in PATCHES.get(name, ()):
        *owner_path, attr = path.split(".")
        owner = module
        try:
            for part in owner_path:
                owner = getattr(owner, part)
            fn = getattr(owner, attr)
        except AttributeError:
            continue  # not in this version of the code
        if getattr(fn, "__wrapped_by_trace__", False):
            continue
        if isinstance(how, tuple):
            wrapped = event(how[1], fn)
        elif callable(how) and how in (_set_label, _server_init):
            wrapped = how(fn)
        else:
            wrapped = span(how, fn)
        wrapped.__wrapped_by_trace__ = True
        setattr(owner, attr, wrapped)


class _Loader:
    """Runs the real loader's ``exec_module``, timing it and applying the module's patches."""

    def __init__(self, inner, name: str, timed: bool):
        self._inner, self._name, self._timed = inner, name, timed

    def create_module(self, spec):
        create = getattr(self._inner, "create_module", None)
        return create(spec) if create else None

    def exec_module(self, module):
        t0 = time.time()
        try:
            self._inner.exec_module(module)
        finally:
            if self._timed:
                emit("import", self._name, t0, time.time())
        _apply(self._name, module)

    def __getattr__(self, attr):
        return getattr(self._inner, attr)


class _Finder:
    def find_spec(self, name, path=None, target=None):
        if name not in IMPORTS and name not in PATCHES:
            return None
        busy = getattr(_tls, "busy", None)
        if busy is None:
            busy = _tls.busy = set()
        if name in busy:
            return None
        busy.add(name)
        try:
            spec = None
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
        finally:
            busy.discard(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _Loader(spec.loader, name, name in IMPORTS)
        return spec


def install(path: str) -> None:
    global _fd
    _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    argv = _cmdline()
    emit("proc", " ".join(argv)[:300], _proc_start(), ppid=os.getppid(), python_up=round(time.time(), 4),
         node=os.environ.get("ELEARN_NODE"))
    os.register_at_fork(after_in_child=lambda: emit("fork", "forked", _proc_start(), ppid=os.getppid()))
    sys.meta_path.insert(0, _Finder())
    import atexit

    atexit.register(lambda: emit("exit", "interpreter exit"))
