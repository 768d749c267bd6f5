"""The Spark barrier task of one allreduce worker: spool, meet, run the TF process, restart-all.

Each of the ``workers`` tasks of the barrier stage spools its partition, then the tasks exchange
what they spooled with ``BarrierTaskContext.allGather``. For every attempt each task picks a fresh
port, the tasks exchange addresses (another ``allGather``), and each starts its TF process with a
``TF_CONFIG`` built from them. The task watches its process, its heartbeat, ZooKeeper (another
task's failure, the driver giving up) and ends the attempt on the first of those; then all tasks
gather the attempts' outcomes and, together, either finish or start the next attempt. The Spark
tasks stay alive across attempts: a failed barrier stage would abort the job instead.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time

import pyarrow as pa

from elearn.mpi.restarts import EXIT_NOT_RETRYABLE, GroupRestarts, describe_exit, may_restart
from elearn.procs import free_port, popen_child, stop_process
from elearn.registry import AppRegistry, acl_for
from elearn.runtime.daemon import FINAL_STATES, child_env, tail
from elearn.runtime.hosts import advertise_host
from elearn.runtime.partition import spool_partition
from elearn.zookeeper import connect

STATS_SCHEMA = "stats string"
ROLE = "worker"


class _Barrier:
    """``allGather`` of JSON-able values, in task order."""

    def __init__(self, context):
        self.context = context

    def gather(self, value) -> list:
        return [json.loads(v) for v in self.context.allGather(json.dumps(value))]


class GroupMember:
    """One task of the allreduce group, for the life of the Spark task."""

    def __init__(self, app: dict, plan, index: int, barrier: _Barrier):
        self.app, self.plan, self.index, self.barrier = app, plan, index, barrier
        self.workers = app["workers"]
        # node_dir is relative to the executor's working directory on a real cluster.
        self.node_dir = node_dir = os.path.abspath(app["node_dir"])
        self.base = os.path.join(node_dir, "allreduce", f"worker-{index}")
        os.makedirs(os.path.join(node_dir, "logs"), exist_ok=True)
        os.makedirs(self.base, exist_ok=True)
        self.log_path = os.path.join(node_dir, "logs", f"worker-{index}.log")
        self.attempts: list[dict] = []
        self.started = time.time()
        self.port = None  # this attempt's TF port

    # -- ZooKeeper ------------------------------------------------------------------------------
    def _connect(self) -> None:
        auth = [tuple(a) for a in self.app.get("zk_auth") or []] or None
        self.client = connect(self.app["zk"], timeout=self.app.get("zk_timeout", 15), auth_data=auth)
        self.reg = AppRegistry(self.client, self.app["app_id"], acl=acl_for(auth))
        self.restarts = GroupRestarts(self.client, self.app["app_id"], acl=acl_for(auth))
        self.host = advertise_host(self.app.get("loopback", False))

    def _announce(self, state: str, **more) -> None:
        info = {"host": self.host, "port": self.port, "state": state, "pid": os.getpid(),
                "log": self.log_path, "attempt": len(self.attempts), "heartbeat": time.time(), **more}
        try:
            self.reg.update(ROLE, self.index, info)
        except Exception:  # a ZooKeeper hiccup must not fail a healthy worker
            pass

    def _app_over(self) -> bool:
        try:
            state = self.reg.state()
        except Exception:
            return False
        return state is None or state.get("state") in FINAL_STATES

    # -- the task -------------------------------------------------------------------------------
    def run(self, batches) -> dict:
        self._connect()
        metas = {}
        try:
            self.reg.register(ROLE, self.index, {"host": self.host, "state": "spooling", "pid": os.getpid()})
            metas = spool_partition(batches, self.plan, self.node_dir, self.index) if self.plan.names else {}
            rows = sum(m["rows"] for m in metas.values())
            self._announce("spooled", rows=rows)
            all_metas = [m["metas"] for m in self.barrier.gather({"metas": metas})]
            outcome = self._attempts(all_metas)
            return {"role": ROLE, "index": self.index, "host": self.host, "rows": rows,
                    "feed_rows": {n: m["rows"] for n, m in metas.items()},
                    "seconds": round(time.time() - self.started, 3), "log": self.log_path,
                    "restarts": max(0, len(self.attempts) - 1), "attempts": self.attempts, **outcome}
        finally:
            for meta in metas.values():
                shutil.rmtree(meta["dir"], ignore_errors=True)
            shutil.rmtree(self.base, ignore_errors=True)
            try:
                self.client.stop()
                self.client.close()
            except Exception:
                pass

    def _attempts(self, all_metas: list) -> dict:
        max_restarts = self.app.get("max_restarts", 3)
        attempt = 0
        while True:
            port = free_port()
            peers = self.barrier.gather({"host": self.host, "port": port})
            mine = self._run_attempt(attempt, [f"{p['host']}:{p['port']}" for p in peers], all_metas)
            self.attempts.append(mine)
            outcomes = self.barrier.gather(mine)
            if all(o["ok"] for o in outcomes):
                return {"ok": True, "model_dir": mine.get("model_dir")}
            if any(o.get("aborted") for o in outcomes):
                return {"ok": False, "aborted": True, "errors": self._errors(outcomes)}
            if not may_restart(attempt, max_restarts, outcomes):
                return {"ok": False, "errors": self._errors(outcomes)}
            attempt += 1
            self._announce("restarting")

    @staticmethod
    def _errors(outcomes: list) -> list:
        return [o for o in outcomes if not o["ok"]]

    def _payload(self, attempt: int, all_metas: list, files: dict) -> str:
        payload = {**files, "job": self.app["job"], "plan": self.plan, "metas": all_metas,
                   "index": self.index, "workers": self.workers, "attempt": attempt,
                   "runtime": self.app.get("runtime", "tf"), "fill": self.app.get("fill"),
                   "checkpoint_dir": self.app["checkpoint_dir"], "model_dir": self.app["model_dir"],
                   "log_dir": self.app["log_dir"], "sys_path": self.app.get("sys_path", []),
                   "metrics": self.app.get("metrics"), "events": self.app.get("events"),
                   "scratch": os.path.join(self.base, "scratch"),
                   "heartbeat_every": self.app.get("heartbeat_every", 2.0)}
        path = os.path.join(self.base, "payload.pkl")
        with open(path, "wb") as f:
            pickle.dump(payload, f)
        return path

    def _run_attempt(self, attempt: int, spec: list, all_metas: list) -> dict:
        files = {k: os.path.join(self.base, f"{k}-{attempt}") for k in ("result", "error", "heartbeat")}
        payload = self._payload(attempt, all_metas, files)
        tf_config = {"cluster": {"worker": spec}, "task": {"type": "worker", "index": self.index}}
        env = child_env(self.app, {"TF_CONFIG": json.dumps(tf_config), "ELEARN_ALLREDUCE": payload})
        with open(self.log_path, "ab") as logf:
            child = popen_child([sys.executable, "-u", "-m", "elearn.mpi.worker"], stdin=subprocess.DEVNULL,
                                stdout=logf, stderr=subprocess.STDOUT, env=env)
        self.port = int(spec[self.index].rsplit(":", 1)[1])
        self._announce("running", child_pid=child.pid)
        outcome = {"worker": self.index, "attempt": attempt, "pid": child.pid, "ok": False}
        stale_after = self.app.get("heartbeat_timeout", 120.0)
        started, last_beat = time.time(), 0.0
        try:
            while True:
                code = child.poll()
                if code is not None:
                    outcome["exit_code"] = code
                    if code == 0 and os.path.exists(files["result"]):
                        with open(files["result"]) as f:
                            outcome.update(ok=True, **json.loads(f.read()))
                    elif code == EXIT_NOT_RETRYABLE:
                        outcome.update(final=True, error=self._last_error(files["error"]),
                                       reason=f"worker {self.index} failed on the job's input or "
                                              "options (not retried: it would fail the same way)")
                        self.restarts.request(attempt, self.index, outcome["reason"], final=True)
                    else:
                        outcome["error"] = self._last_error(files["error"])
                        other = self._peer_failure(attempt) if code > 0 else None
                        if other is not None:  # this error is the echo of a peer's death
                            outcome.update(reason=f"stopped: {other['reason']}", stopped=True)
                            return outcome
                        outcome["reason"] = f"worker {self.index} {describe_exit(code)}"
                        self.restarts.request(attempt, self.index, outcome["reason"])
                    return outcome
                other = self.restarts.requested(attempt)
                if other is not None:
                    outcome["reason"] = f"stopped: {other['reason']}"
                    outcome["stopped"] = True
                    return outcome
                beat = _mtime(files["heartbeat"]) or started
                if time.time() - beat > stale_after:
                    outcome["reason"] = (f"worker {self.index} stopped heart-beating for "
                                         f"{time.time() - beat:.0f}s")
                    outcome["error"] = tail(self.log_path, 15)
                    self.restarts.request(attempt, self.index, outcome["reason"])
                    return outcome
                if time.time() - last_beat > 5:
                    last_beat = time.time()
                    if self._app_over():
                        outcome.update(reason="the application was stopped", aborted=True)
                        return outcome
                    self._announce("running", child_pid=child.pid)
                time.sleep(0.2)
        finally:
            stop_process(child, grace=5)
            for k in ("result", "heartbeat"):
                _remove(files[k])

    def _peer_failure(self, attempt: int, wait: float = 2.0) -> dict | None:
        """Another worker's request to end ``attempt``, waited for a moment.

        When a peer dies, the collective fails in every other worker too, and a survivor's process
        can exit (with an error) before the dead one's task has noticed; the peer's death is the
        cause worth naming, and its task files it within a poll interval."""
        deadline = time.monotonic() + wait
        while True:
            other = self.restarts.requested(attempt)
            if other is not None or time.monotonic() > deadline:
                return other
            time.sleep(0.1)

    def _last_error(self, error_file: str) -> str:
        if os.path.exists(error_file):
            with open(error_file) as f:
                text = f.read()
            _remove(error_file)
            return "\n".join([ln for ln in text.splitlines() if ln.strip()][-20:])
        return tail(self.log_path, 15)


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def allreduce_arrow_task(app: dict, plan):
    """The barrier ``mapInArrow`` function: one JSON stats row per task."""
    def run(batches):
        from pyspark import BarrierTaskContext

        context = BarrierTaskContext.get()
        stats = GroupMember(app, plan, context.partitionId(), _Barrier(context)).run(batches)
        yield pa.RecordBatch.from_pydict({"stats": [json.dumps(stats)]})
    return run


def allreduce_task(app: dict, plan):
    """The barrier ``mapPartitions`` function when nothing is fed."""
    def run(_):
        from pyspark import BarrierTaskContext

        context = BarrierTaskContext.get()
        yield json.dumps(GroupMember(app, plan, context.partitionId(), _Barrier(context)).run([]))
    return run
