"""Allreduce mode on a worker's task: meet the group at the barrier, run the training process in attempts.

After spooling, the tasks of the barrier stage exchange what they spooled (``allGather``). For every
attempt each task picks a fresh port, the tasks exchange addresses (another ``allGather``), check
that they reach each other's ports (``elearn.cluster.peers``; one more ``allGather`` of the verdicts, so a
blocked network fails every task alike, naming who cannot reach whom), and each starts its
training process (``elearn.train.trainer``) with a ``TF_CONFIG`` built from them. The
task watches its process, the process's heartbeat and the group's restart requests in ZooKeeper,
and ends the attempt on the first of those; then all tasks gather the attempts' outcomes and,
together, finish or start the next attempt. The Spark tasks stay alive across attempts: a failed
barrier stage would abort the whole job.

Only what another attempt can fix is retried (``elearn.cluster.restart``): a process killed by a signal, a
hung one, one whose peer was lost. The job's own error (an ``ImportError`` in the job file, an
exception in ``train``) ends the group at once with its traceback, and names itself as the cause.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass, replace

from elearn.cluster.logtail import tail
from elearn.cluster.peers import describe, hold_port, unreachable
from elearn.cluster.procs import describe_exit
from elearn.cluster.restart import EXIT_NOT_RETRYABLE
from elearn.cluster.waits import wait_until
from elearn.feed.columns import FeedInfo
from elearn.mpi.group import GroupRestarts
from elearn.runtime.node_task import NodeTask, child_env
from elearn.specs import Attempt
from elearn.train.launch import HEARTBEAT_ENV, TrainerProcess, trainer_env

PEER_GRACE = 2.0  # seconds a failed worker's task waits for a peer's death to be filed first
FROZEN_GRACE = 30.0  # ... and at most this much more for a frozen peer's, after losing its cluster


@dataclass(frozen=True)
class AttemptOutcome:
    """How one worker's attempt ended, as every task of the group learns it at the barrier."""

    worker: int
    attempt: int
    ok: bool = False
    pid: int | None = None
    reason: str = ""                 # "worker 1 killed by SIGKILL: ..." (why it did not succeed)
    error: str = ""                  # the last lines of its traceback or log
    model_dir: str | None = None
    stopped: bool = False            # ended because another worker's attempt failed first
    aborted: bool = False            # the application was stopped
    final: bool = False              # the job's own error: another attempt would fail the same way
    unreachable: bool = False        # it could not reach a peer's TF port


@dataclass(frozen=True)
class _GroupStopped:
    """Another worker asked the group to end this attempt, for ``reason``."""

    reason: str


@dataclass(frozen=True)
class _Hung:
    """The training process stopped touching its heartbeat file ``seconds`` ago."""

    seconds: float


def serve(task: NodeTask) -> dict:
    spec = task.spec
    restarts = GroupRestarts(task.reg)
    base = os.path.join(task.node_dir, "allreduce", f"worker-{task.index}")
    os.makedirs(base, exist_ok=True)
    task.update("spooled")
    metas = [m["metas"] for m in task.barrier.gather({"metas": task.metas})]
    feeds = {name: FeedInfo.gather(name, spec.plan, [m[name] for m in metas]) for name in spec.plan.names}
    attempts: list[AttemptOutcome] = []

    def ended(ok: bool, errors=(), **more) -> dict:
        return {"ok": ok, "errors": [asdict(e) for e in errors], "attempts": [asdict(a) for a in attempts],
                **more}

    try:
        number = 0
        while True:
            with hold_port() as held:  # open for the peers' probes until TF takes it
                peers = task.barrier.gather({"host": task.host, "port": held.getsockname()[1],
                                             "hostname": socket.gethostname()})
                blocked = _unreachable_peers(task, peers, number)
            if blocked:
                return ended(False, blocked)
            mine = _run_attempt(task, restarts, Attempt(
                index=task.index, number=number, feeds=feeds,
                result=os.path.join(base, f"result-{number}.json"), staging=os.path.join(base, "staging"),
                heartbeat=os.path.join(base, f"heartbeat-{number}"),
                scratch=os.path.join(base, "scratch") if task.index else None), peers)
            attempts.append(mine)
            outcomes = [AttemptOutcome(**o) for o in task.barrier.gather(asdict(mine))]
            errors = [o for o in outcomes if not o.ok]
            if not errors:
                return ended(True, model_dir=mine.model_dir)
            if any(o.aborted for o in outcomes):
                return ended(False, errors, aborted=True)
            cause = next((e.reason for e in errors if not e.stopped), errors[0].reason)
            if any(o.final for o in outcomes) or task.policy.next_delay(cause) is None:
                return ended(False, errors)
            number += 1
            task.update("restarting")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _unreachable_peers(task: NodeTask, peers: list, number: int) -> list[AttemptOutcome]:
    """Every worker probes every other's port; all learn every verdict (one more gather), so all
    fail alike: outcomes naming each worker that cannot reach a peer, or none."""
    addresses = {f"worker {i}": f"{p['host']}:{p['port']}" for i, p in enumerate(peers)}
    others = {name: a for name, a in addresses.items() if name != f"worker {task.index}"}
    verdicts = task.barrier.gather(unreachable(others, task.spec.register_timeout))
    return [AttemptOutcome(i, number, unreachable=True,
                           reason=f"worker {i} on {peers[i]['hostname']} cannot reach {describe(v, addresses)}")
            for i, v in enumerate(verdicts) if v]


def _run_attempt(task: NodeTask, restarts: GroupRestarts, attempt: Attempt, peers: list) -> AttemptOutcome:
    spec, index = task.spec, task.index
    addresses = [f"{p['host']}:{p['port']}" for p in peers]
    tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
    task.port = peers[index]["port"]
    task.note(f"attempt {attempt.number}: worker {index} of {spec.train.num_workers} at {addresses[index]}")
    # Its output is the node's log, which the driver relays for the chief as PS mode shows the
    # coordinator's; TensorFlow's C++ start-up lines go to a file of their own.
    env = trainer_env(child_env(spec.tf_log, {**spec.backend.process_env(), "TF_CONFIG": json.dumps(tf_config),
                                              HEARTBEAT_ENV: attempt.heartbeat}),
                      spec.tf_log, os.path.join(task.node_dir, "logs", f"worker-{index}.tf-import.log"))
    trainer = TrainerProcess(env, task.log_path)
    trainer.send(spec.train, attempt)
    task.update("running", child_pid=trainer.pid, attempt=attempt.number)
    outcome = AttemptOutcome(index, attempt.number, pid=trainer.pid)
    started = time.time()

    def stop_reason(_state):
        other = restarts.requested(attempt.number)
        if other is not None:
            return _GroupStopped(other["reason"])
        beat = _mtime(attempt.heartbeat) or started
        if time.time() - beat > spec.backend.heartbeat_timeout:
            return _Hung(time.time() - beat)
        return None

    def failed(what: str, error: str, final: bool = False) -> AttemptOutcome:
        reason = f"worker {index} {what}"
        restarts.request(attempt.number, index, what, final=final)
        return replace(outcome, reason=reason, error=error, final=final)

    try:
        stopped = task.watch(trainer.proc, also=stop_reason, interval=0.2)
        if stopped.over:
            return replace(outcome, reason="the application was stopped", aborted=True)
        if isinstance(stopped.reason, _GroupStopped):
            return replace(outcome, reason=f"stopped: {stopped.reason.reason}", stopped=True)
        if isinstance(stopped.reason, _Hung):
            return failed(f"stopped heart-beating for {stopped.reason.seconds:.0f}s", tail(task.log_path, 15))
        result = trainer.outcome()
        if stopped.code == 0 and result.ok:
            return replace(outcome, ok=True, model_dir=result.model_dir)
        error = result.traceback or tail(task.log_path, 15)
        error = "\n".join([ln for ln in error.splitlines() if ln.strip()][-20:])
        # When a peer dies, the collective fails in every other worker too, and a survivor can
        # exit before the dead one's task has noticed: the peer's death is the cause to name. A
        # frozen peer is noticed only after --heartbeat-timeout, while TensorFlow's own health
        # check may fail the survivor's collective sooner (measured: 10 s after a SIGSTOP), so a
        # survivor that lost its cluster waits that long for the peer's word, up to FROZEN_GRACE:
        # when the peer's whole host is gone no word comes, and Spark takes longer than that to
        # replace the host's task before the group can restart anyway.
        grace = PEER_GRACE + (min(spec.backend.heartbeat_timeout, FROZEN_GRACE) if result.kind == "cluster" else 0)
        other = _peer_request(restarts, attempt.number, grace) if stopped.code > 0 else None
        if other is not None:
            return replace(outcome, reason=f"stopped: {other['reason']}", stopped=True, error=error)
        last = result.error.splitlines()[0] if result.error and not result.died else ""
        if stopped.code == EXIT_NOT_RETRYABLE:
            return failed("failed in the job's own code or input (not retried: it would fail the same "
                          f"way): {last}", error, final=True)
        return failed(describe_exit(stopped.code) + (f": {last}" if last else ""), error)
    finally:
        trainer.stop(grace=5)
        for path in (attempt.result, attempt.heartbeat):
            _remove(path)


def _peer_request(restarts: GroupRestarts, number: int, grace: float) -> dict | None:
    """Another worker's request to end attempt ``number``, if one is filed within ``grace`` s."""
    try:
        return wait_until(lambda: restarts.requested(number), grace, interval=0.1)
    except TimeoutError:
        return None


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
