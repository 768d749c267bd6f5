"""One node of an application for the life of its Spark task: where a node's life is written, once.

In both modes every node is one long Spark task. :class:`NodeTask` joins ZooKeeper (one ephemeral
znode per node, carrying the application's ACL), spools its share of the feed to local disk, starts
its TF process as a child that cannot outlive it (``procs.popen_child``), watches that child and the
application, restarts the child under ``--max-restarts`` when its backend says to, reports its
statistics through Spark and leaves, stopping its child and removing its spool on every path out.

What the two modes do differently is one hook of the backend the node spec carries:
``backend.serve(task)`` — PS mode serves the cluster spec the driver publishes with a TF server and
restarts it in place; allreduce mode meets its peers at the Spark barrier and runs the training
process in attempts (``elearn.ps.node``, ``elearn.mpi.node``). ``backend.before_spool(task)`` lets PS
mode start its TF server while the rows are still arriving.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from kazoo.hosts import collect_hosts
from kazoo.protocol.states import KazooState

from elearn.cluster.hosts import advertise_host
from elearn.cluster.logtail import quoted, tail
from elearn.cluster.peers import describe, unreachable
from elearn.cluster.procs import describe_exit, popen_child, stop_process, tf_thread_env
from elearn.cluster.registry import AppRegistry
from elearn.cluster.restart import RestartPolicy
from elearn.cluster.waits import wait_until
from elearn.cluster.zookeeper import SESSION_TIMEOUT, connect
from elearn.cluster.zookeeper import close as close_client
from elearn.errors import ClusterError, StorageError
from elearn.feed.arrays import from_strings
from elearn.feed.partition import spool_partition
from elearn.runtime.gpus import task_gpu_env
from elearn.specs import NodeSpec
from elearn.storage.mirror import Mirror
from elearn.storage.mounts import check_marks

FINAL_STATES = ("done", "failed")
STATS_SCHEMA = "stats string"  # every node task returns one row: its statistics as JSON
HEARTBEAT_EVERY = 5.0          # seconds between a node's znode updates while it runs


@dataclass(frozen=True)
class Stopped:
    """Why :meth:`NodeTask.watch` returned: the child exited (``code``), the application is over,
    or the backend's own check named a ``reason``."""

    code: int | None = None
    over: bool = False
    reason: str | None = None

    @property
    def exited(self) -> bool:
        return self.code is not None


class NodeTask:
    """One PS or worker node (PS mode) or one worker of the group (allreduce mode)."""

    def __init__(self, spec: NodeSpec, role: str, index: int, barrier=None):
        self.spec, self.role, self.index, self.barrier = spec, role, index, barrier
        self.node_dir = os.path.abspath(spec.node_dir)  # relative to the executor's working dir
        os.makedirs(os.path.join(self.node_dir, "logs"), exist_ok=True)
        self.log_path = os.path.join(self.node_dir, "logs", f"{role}-{index}.log")
        # Restarts of this node's TF process, in place (PS) or with its group (allreduce).
        self.policy = RestartPolicy(spec.max_restarts, backoff=0.0)
        self.host: str | None = None
        self.port: int | None = None
        self.generation = 0
        self.child: subprocess.Popen | None = None
        self.metas: dict = {}        # dataset name -> spool metadata
        self.published: dict = {}    # what the node's znode carries beyond the basics
        self.exit_codes: list = []
        self.started = time.time()
        self.client = self.reg = None
        self._session_lost = threading.Event()

    # -- the whole life -------------------------------------------------------------------------
    def run(self, batches) -> dict:
        """Spool ``batches``, then serve as the backend says; the node's statistics."""
        backend = self.spec.backend
        try:
            check_marks(self.spec.mounts)  # before anything is spent on a host that cannot keep it
        except StorageError as exc:
            raise StorageError(f"{self.role}:{self.index}: {exc}") from None  # it names the host
        self._check_driver_files()
        mirror = self._ship_log()
        self.join()
        try:
            self.announce("spooling")
            backend.before_spool(self)
            self.spool(batches)
            outcome = backend.serve(self) or {}
            return self.stats(**outcome)
        finally:
            if self.child is not None:
                self.exit_codes.append(stop_process(self.child, grace=5))
                self.child = None
            for meta in self.metas.values():  # the spool lives as long as the node, also on failure
                shutil.rmtree(meta["dir"], ignore_errors=True)
            self.leave()
            if mirror is not None:
                mirror.stop()  # the log's last lines reach the driver, also after a failure

    def _check_driver_files(self) -> None:
        """On another host than the driver: its file service, where this node's log, checkpoints
        and model go, must answer (a firewall, or a driver address this host cannot route to)."""
        if self.spec.files is None:
            return
        peer = {"the driver's file service": self.spec.files.address}
        missed = unreachable(peer, self.spec.register_timeout)
        if missed:
            raise self._driver_unreachable(
                f"{describe(missed, peer)}, where nodes on other hosts send their logs, checkpoints "
                "and models")

    def _driver_unreachable(self, what: str, more: str = "") -> ClusterError:
        """This node cannot reach ``what``, a service of the driver's host: where it listens, the fix."""
        return ClusterError(
            f"{self.role}:{self.index} on {socket.gethostname()} cannot reach {what}. It is reached "
            "at the address of the driver's host that Spark's executors reach the driver at "
            "(spark.driver.host, or ELEARN_HOST if set): allow TCP from the executors' "
            "hosts to the driver's host on every port, or set ELEARN_HOST to an address of the "
            f"driver's host they reach{more}.")

    def _ship_log(self):
        """On another host than the driver: copy this node's log into the application directory
        (``nodes/logs/<role>-<index>.log``) while it grows."""
        if self.spec.files is None:
            return None

        open(self.log_path, "ab").close()
        storage = self.spec.files.storage_for(os.path.join(self.spec.app_dir, "nodes", "logs"))
        return Mirror(storage).add(self.log_path, os.path.basename(self.log_path)).start()

    def stats(self, **outcome) -> dict:
        return {"role": self.role, "index": self.index, "host": self.host, "port": self.port,
                "hostname": socket.gethostname(), "restarts": self.policy.restarts,
                "seconds": round(time.time() - self.started, 3), "log": self.log_path,
                "exit_codes": self.exit_codes, "rows": sum(m["rows"] for m in self.metas.values()),
                "feed_rows": {n: m["rows"] for n, m in self.metas.items()}, **outcome}

    # -- ZooKeeper --------------------------------------------------------------------------------
    def join(self) -> None:
        """Connect to the application's ZooKeeper and learn the address peers reach us at."""
        try:
            self.client = connect(self.spec.zk, self.spec.credentials)
        except ClusterError:
            if not self.spec.embedded_zk:
                raise  # the user's --zk: its message says to check it
            raise self._driver_unreachable(
                f"the driver's embedded ZooKeeper at {self.spec.zk} (no answer within "
                f"{SESSION_TIMEOUT:.0f}s)", ", or pass --zk with an ensemble every executor reaches") from None
        self.client.add_listener(self._on_zk_state)
        self.reg = AppRegistry(self.client, self.spec.app_id, self.spec.credentials)
        # The address routing to ZooKeeper is the one the driver and the peers reach this host at.
        self.host = advertise_host(self.spec.same_host, towards=collect_hosts(self.spec.zk)[0][0][0])

    def leave(self) -> None:
        if self.client is not None:
            close_client(self.client)

    def _on_zk_state(self, state) -> None:
        if state == KazooState.LOST:
            self._session_lost.set()

    def info(self, state: str, **more) -> dict:
        return {"host": self.host, "port": self.port, "state": state, "pid": os.getpid(),
                "generation": self.generation, "hostname": socket.gethostname(), "log": self.log_path,
                "restarts": self.policy.restarts, "heartbeat": time.time(), **self.published, **more}

    def announce(self, state: str, **more) -> None:
        """(Re)create this node's znode in ``state``."""
        self.reg.register(self.role, self.index, self.info(state, **more))

    def update(self, state: str, **more) -> None:
        """Update this node's znode; a ZooKeeper hiccup must not fail a healthy node."""
        try:
            self.reg.update(self.role, self.index, self.info(state, **more))
        except Exception:
            pass

    def app_state(self) -> dict | None:
        try:
            return self.reg.state() or {"state": "gone"}
        except Exception:
            return None   # unreachable for a moment: nothing is decided on it

    def app_over(self) -> bool:
        state = self.app_state()
        return state is not None and state.get("state") in (*FINAL_STATES, "gone")

    def wait_app_over(self) -> None:
        wait_until(self.app_over, 3600 * 24 * 365, interval=0.5)

    # -- the feed -----------------------------------------------------------------------------------
    def spool(self, batches, every: float = 2.0) -> dict:
        """Spool this node's share of the feed, publishing rows and bytes seen every ``every`` s.

        A node fed nothing (``batches`` empty: a PS, or a job whose ``pre_train`` returned None)
        spools nothing."""
        if not batches:
            return {}
        rows = nbytes = 0
        t0 = last = time.monotonic()

        def reporting():
            nonlocal rows, nbytes, last
            for batch in batches:
                rows += batch.num_rows
                nbytes += batch.nbytes
                yield batch
                now = time.monotonic()
                if now - last >= every:
                    last = now
                    self.update("spooling", feed={"rows": rows, "bytes": nbytes,
                                                  "seconds": round(now - t0, 2)})

        try:
            self.metas = spool_partition(reporting(), self.spec.plan, self.node_dir, self.index)
        except BaseException:
            if self.child is not None:  # the Python worker lives on; its TF child must not
                stop_process(self.child, grace=3)
                self.child = None
            raise
        for meta in self.metas.values():
            meta["seconds"] = round(time.monotonic() - t0, 3)
        return self.metas

    # -- the TF process -------------------------------------------------------------------------------
    def note(self, text: str) -> None:
        """A line of the node's own in its log (which attempt starts, why one ended)."""
        with open(self.log_path, "a") as f:
            f.write(f"=== {time.strftime('%H:%M:%S')} {self.role}:{self.index} {text}\n")

    def start_child(self, module: str, *args: str, env: dict | None = None,
                    stdin=subprocess.DEVNULL) -> subprocess.Popen:
        """``python -m module args`` with the executor's import path, writing to the node's log."""
        with open(self.log_path, "ab") as logf:
            return popen_child([sys.executable, "-u", "-m", module, *args], stdin=stdin, stdout=logf,
                               stderr=subprocess.STDOUT, env=child_env(self.spec.tf_log, env))

    def watch(self, child: subprocess.Popen, also=None, interval: float = 0.25) -> Stopped:
        """Watch ``child`` and the application until one of them ends, or ``also(state)`` (given the
        application's state) names a reason; meanwhile keep the znode fresh and re-register after
        a lost session."""
        last_beat = time.monotonic()
        while True:
            code = child.poll()
            if code is not None:
                self.exit_codes.append(code)
                return Stopped(code=code)
            state = self.app_state()
            if state is not None and state.get("state") in (*FINAL_STATES, "gone"):
                return Stopped(over=True)
            reason = also(state or {}) if also is not None else None
            if reason:
                return Stopped(reason=reason)
            if self._session_lost.is_set() and self.client.connected:
                self._session_lost.clear()
                try:
                    self.announce("running", child_pid=child.pid)
                except Exception:
                    self._session_lost.set()  # try again on the next turn
            if time.monotonic() - last_beat > HEARTBEAT_EVERY:
                last_beat = time.monotonic()
                self.update("running", child_pid=child.pid)
            time.sleep(interval)

    def failure(self, what: str) -> ClusterError:
        """An error naming this node, its host and its log's last lines (which cross Spark whole)."""
        return ClusterError(f"{self.role}:{self.index} on {socket.gethostname()}: {what}; log "
                            f"{self.log_path}, last lines:\n{quoted(tail(self.log_path, 20))}")


def child_env(tf_log: bool, extra: dict | None = None) -> dict:
    """The environment of a node's TF process: the executor's, its import path, its GPUs, and
    thread pools sized to its task's cores."""
    env = dict(os.environ)
    # The executor's import path (pyspark.zip, --py-files, a shipped archive) for the child too.
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    if not tf_log:
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    # The TF process sees only the GPUs Spark assigned to this task (none: none).
    env.update(task_gpu_env())
    env.update(tf_thread_env(task_cores(), env))
    env.update(extra or {})
    return env


def task_cores() -> int:
    """The CPUs Spark gave the running task (``spark.task.cpus``; the executor's cores with
    executor shapes); outside a task, the host's."""
    from pyspark import TaskContext

    context = TaskContext.get()
    return context.cpus() if context is not None else (os.cpu_count() or 1)


def wait_listening(host: str, port: int, proc: subprocess.Popen, timeout: float) -> None:
    """Until the TF process ``proc`` accepts connections on ``host:port``; named errors otherwise."""
    def up():
        if proc.poll() is not None:
            raise ClusterError(f"TF process {describe_exit(proc.returncode)} before serving")
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            return False

    wait_until(up, timeout, interval=0.2,
               on_timeout=lambda: ClusterError(f"TF process did not listen on {host}:{port} "
                                               f"within {timeout:.0f}s"))


class Barrier:
    """``allGather`` of JSON-able values across the tasks of a barrier stage, in task order."""

    def __init__(self, context):
        self.context = context

    def gather(self, value) -> list:
        return [json.loads(v) for v in self.context.allGather(json.dumps(value))]


def arrow_task(spec: NodeSpec, role: str, fed: bool):
    """The ``mapInArrow`` function of a node job: one node per task, one JSON stats row out.

    ``fed``: the task's input rows are its share of the feed (else they only number the tasks)."""
    def run(batches):
        import pyarrow as pa
        from pyspark import BarrierTaskContext, TaskContext

        context = TaskContext.get()
        barrier = Barrier(context) if isinstance(context, BarrierTaskContext) else None
        node = NodeTask(spec, role, context.partitionId(), barrier)
        stats = node.run(batches if fed else [])
        # Built without pa.array, which imports pandas: in every node at once, at teardown.
        yield pa.RecordBatch.from_arrays([from_strings([json.dumps(stats)])], names=["stats"])
    return run
