"""Allreduce mode on a worker's task: meet the group at the barrier, run the training process in attempts.

After spooling, the tasks of the barrier stage exchange what they spooled (``allGather``). For every
attempt each task picks a fresh port, the tasks exchange addresses (another ``allGather``), check
that they reach each other's ports (``elearn.peers``; one more ``allGather`` of the verdicts, so a
blocked network fails every task alike, naming who cannot reach whom), and each starts its
training process (``elearn.runtime.trainer``) with a ``TF_CONFIG`` built from them. The
task watches its process, the process's heartbeat and the group's restart requests in ZooKeeper,
and ends the attempt on the first of those; then all tasks gather the attempts' outcomes and,
together, finish or start the next attempt. The Spark tasks stay alive across attempts: a failed
barrier stage would abort the whole job.

Only what another attempt can fix is retried (``elearn.restart``): a process killed by a signal, a
hung one, one whose peer was lost. The job's own error (an ``ImportError`` in the job file, an
exception in ``train``) ends the group at once with its traceback, and names itself as the cause.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import time

from elearn.jsonlines import read_json
from elearn.logtail import tail
from elearn.mpi.group import GroupRestarts
from elearn.peers import describe, hold_port, unreachable
from elearn.procs import describe_exit, stop_process
from elearn.registry import acl_for
from elearn.restart import EXIT_NOT_RETRYABLE
from elearn.runtime.feedspec import FeedInfo
from elearn.runtime.node_task import NodeTask
from elearn.specs import Attempt

TRAINER = "elearn.runtime.trainer"
PEER_GRACE = 2.0  # seconds a failed worker's task waits for a peer's death to be filed first


def serve(task: NodeTask) -> dict:
    spec = task.spec
    restarts = GroupRestarts(task.client, spec.app_id, acl=acl_for([tuple(a) for a in spec.zk_auth]))
    base = os.path.join(task.node_dir, "allreduce", f"worker-{task.index}")
    os.makedirs(base, exist_ok=True)
    task.update("spooled")
    metas = [m["metas"] for m in task.barrier.gather({"metas": task.metas})]
    feeds = {name: FeedInfo.gather(name, spec.plan, [m[name] for m in metas]) for name in spec.plan.names}
    attempts: list = []
    try:
        number = 0
        while True:
            with hold_port() as held:  # open for the peers' probes until TF takes it
                peers = task.barrier.gather({"host": task.host, "port": held.getsockname()[1],
                                             "hostname": socket.gethostname()})
                blocked = _unreachable_peers(task, peers, number)
            if blocked:
                return {"ok": False, "errors": blocked, "attempts": attempts}
            mine = _run_attempt(task, restarts, Attempt(
                index=task.index, number=number, feeds=feeds,
                result=os.path.join(base, f"result-{number}.json"), staging=os.path.join(base, "staging"),
                heartbeat=os.path.join(base, f"heartbeat-{number}"),
                scratch=os.path.join(base, "scratch") if task.index else None), peers)
            attempts.append(mine)
            outcomes = task.barrier.gather(mine)
            errors = [o for o in outcomes if not o["ok"]]
            if not errors:
                return {"ok": True, "model_dir": mine.get("model_dir"), "attempts": attempts}
            if any(o.get("aborted") for o in outcomes):
                return {"ok": False, "aborted": True, "errors": errors, "attempts": attempts}
            cause = next((e["reason"] for e in errors if not e.get("stopped")), errors[0]["reason"])
            if any(o.get("final") for o in outcomes) or task.policy.next_delay(cause) is None:
                return {"ok": False, "errors": errors, "attempts": attempts}
            number += 1
            task.update("restarting")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _unreachable_peers(task: NodeTask, peers: list, number: int) -> list:
    """Every worker probes every other's port; all learn every verdict (one more gather), so all
    fail alike: errors naming each worker that cannot reach a peer, or nothing."""
    addresses = {f"worker {i}": f"{p['host']}:{p['port']}" for i, p in enumerate(peers)}
    others = {name: a for name, a in addresses.items() if name != f"worker {task.index}"}
    verdicts = task.barrier.gather(unreachable(others, task.spec.register_timeout))
    return [{"worker": i, "attempt": number, "unreachable": True,
             "reason": f"worker {i} on {peers[i]['hostname']} cannot reach {describe(v, addresses)}"}
            for i, v in enumerate(verdicts) if v]


def _run_attempt(task: NodeTask, restarts: GroupRestarts, attempt: Attempt, peers: list) -> dict:
    spec, index = task.spec, task.index
    payload = os.path.join(os.path.dirname(attempt.result), f"attempt-{attempt.number}.pkl")
    with open(payload, "wb") as f:
        pickle.dump((spec.train, attempt), f)
    addresses = [f"{p['host']}:{p['port']}" for p in peers]
    tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
    task.port = peers[index]["port"]
    task.note(f"attempt {attempt.number}: worker {index} of {spec.train.num_workers} at {addresses[index]}")
    env = {"TF_CONFIG": json.dumps(tf_config)}
    if not spec.tf_log:
        # Its output is relayed to the driver's console: TensorFlow's C++ start-up lines (CUDA
        # probing, absl) go to a file of their own instead, as in PS mode's coordinator.
        env.update(TF_CPP_MIN_LOG_LEVEL="3",
                   ELEARN_TF_IMPORT_LOG=os.path.join(task.node_dir, "logs", f"worker-{index}.tf-import.log"))
    child = task.start_child(TRAINER, payload, env=env, stdin=subprocess.PIPE)
    task.update("running", child_pid=child.pid, attempt=attempt.number)
    outcome = {"worker": index, "attempt": attempt.number, "pid": child.pid, "ok": False}
    started = time.time()

    def stop_reason(_state):
        other = restarts.requested(attempt.number)
        if other is not None:
            return f"stopped: {other['reason']}"
        beat = _mtime(attempt.heartbeat) or started
        if time.time() - beat > spec.backend.heartbeat_timeout:
            return f"worker {index} stopped heart-beating for {time.time() - beat:.0f}s"
        return None

    try:
        stopped = task.watch(child, also=stop_reason, interval=0.2)
        if stopped.over:
            return {**outcome, "reason": "the application was stopped", "aborted": True}
        if stopped.reason:
            if stopped.reason.startswith("stopped: "):
                return {**outcome, "reason": stopped.reason, "stopped": True}
            restarts.request(attempt.number, index, stopped.reason)
            return {**outcome, "reason": stopped.reason, "error": tail(task.log_path, 15)}
        result = _result(attempt.result)
        if stopped.code == 0 and result.get("status") == "ok":
            return {**outcome, "ok": True, "model_dir": result.get("model_dir")}
        error = result.get("traceback") or tail(task.log_path, 15)
        error = "\n".join([ln for ln in error.splitlines() if ln.strip()][-20:])
        # When a peer dies, the collective fails in every other worker too, and a survivor can
        # exit before the dead one's task has noticed: the peer's death is the cause to name.
        other = _peer_request(restarts, attempt.number) if stopped.code > 0 else None
        if other is not None:
            return {**outcome, "reason": f"stopped: {other['reason']}", "stopped": True, "error": error}
        last = result.get("error", "").splitlines()[0] if result.get("error") else ""
        if stopped.code == EXIT_NOT_RETRYABLE:
            reason = (f"worker {index} failed in the job's own code or input (not retried: it "
                      f"would fail the same way): {last}")
            restarts.request(attempt.number, index, reason, final=True)
            return {**outcome, "reason": reason, "error": error, "final": True}
        reason = f"worker {index} {describe_exit(stopped.code)}" + (f": {last}" if last else "")
        restarts.request(attempt.number, index, reason)
        return {**outcome, "reason": reason, "error": error}
    finally:
        stop_process(child, grace=5)
        for path in (attempt.result, attempt.heartbeat, payload):
            _remove(path)


def _peer_request(restarts: GroupRestarts, number: int) -> dict | None:
    deadline = time.monotonic() + PEER_GRACE
    while True:
        other = restarts.requested(number)
        if other is not None or time.monotonic() > deadline:
            return other
        time.sleep(0.1)


def _result(path: str) -> dict:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return {}


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
