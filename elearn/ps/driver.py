"""PS mode on the driver: launch the PS and worker node jobs, form the cluster, supervise ``train``.

The two jobs run concurrently from driver threads (different executors may serve them, see the
design note); their tasks meet in ZooKeeper. The driver waits for every node with a timeout, then
publishes the TF cluster spec with a training process as ``chief`` (``elearn.train.trainer``, the
coordinator), which runs ``train(ctx)`` under ``ParameterServerStrategy``.

Recovery: a worker's TF process that dies is restarted in place by its node task and TensorFlow's
coordinator carries on. Anything else (a parameter server lost, a node whose Spark task was rerun
at a new address) ends the coordinator; the driver then re-forms the cluster under a new
generation and runs ``train`` again, which resumes from the latest checkpoint.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from elearn.cluster.logtail import spark_error_message, tail
from elearn.cluster.peers import FIX, PEER_TIMEOUT, describe, unreachable
from elearn.cluster.procs import free_port, tf_thread_env
from elearn.cluster.restart import RestartPolicy
from elearn.cluster.waits import wait_until
from elearn.driver.handles import Handles, Trained
from elearn.driver.shapes import build_profiles, cluster_offers, describe_offers, profiles_requested, shapes
from elearn.errors import ClusterError, UserCodeError
from elearn.feed.columns import FeedInfo
from elearn.ps.node import START_TIMEOUT
from elearn.specs import Attempt
from elearn.train.launch import TrainerProcess, TrainOutcome, trainer_env

log = logging.getLogger(__name__)


@dataclass
class _Nodes:
    """What the driver keeps about the PS-mode cluster between generations."""

    ps: int
    workers: int
    chief: str                                  # the coordinator's address in the cluster spec
    profiles: dict = field(default_factory=dict)


def _launch(h: Handles, nodes: _Nodes, frame) -> None:
    # Workers run on the application's executors (of the worker shape); the PS on its own.
    h.jobs.start("ps", h.node_spec, count=nodes.ps, profile=nodes.profiles.get("ps"))
    h.jobs.start("worker", h.node_spec, frame=frame, count=nodes.workers)


def _check_jobs(h: Handles) -> None:
    for job in h.jobs.threads:
        if job.error is not None:
            raise ClusterError(f"the {job.role} Spark job failed before the cluster formed: "
                               f"{spark_error_message(job.error)}") from job.error
        if not job.is_alive() and job.result is not None:
            raise ClusterError(f"the {job.role} Spark job ended before the cluster formed")


def _missing(registry, ps: int, workers: int, want_states=None, generation=None) -> list[str]:
    out = []
    for role, n in (("ps", ps), ("worker", workers)):
        nodes = registry.nodes(role)
        for i in range(n):
            node = nodes.get(i)
            ok = node is not None and (not want_states or node.get("state") in want_states) and \
                (generation is None or node.get("generation", 0) == generation)
            if not ok:
                out.append(f"{role}:{i}" + (f" ({node.get('state')})" if node else ""))
    return out


def _feed_progress(h, nodes: dict) -> None:
    parts = []
    for i in sorted(nodes):
        feed = nodes[i].get("feed")
        if nodes[i].get("state") != "spooling" or not feed:
            continue
        mb = feed["bytes"] / 1e6
        rate = feed["rows"] / max(feed["seconds"], 1e-3)
        parts.append(f"worker:{i} {feed['rows']:,} rows {mb:,.1f} MB ({rate:,.0f} rows/s)")
    if parts:
        h.console.progress("feed", "feeding: " + "; ".join(parts))


def _fed(index: int, node: dict) -> str:
    """``worker:0 10,000 rows, 0.4 MB in 0.2s (50,000 rows/s)``: one worker's whole feed."""
    spools = (node.get("spool") or {}).values()
    rows, nbytes = node.get("rows", 0), sum(m.get("bytes", 0) for m in spools)
    seconds = max((m.get("seconds", 0.0) for m in spools), default=0.0)
    return (f"worker:{index} {rows:,} rows, {nbytes / 1e6:,.1f} MB in {seconds:.1f}s"
            f" ({rows / max(seconds, 1e-3):,.0f} rows/s)")


def _failed_nodes(reg) -> list[str]:
    return [f"{r}:{i}" for r in ("ps", "worker") for i, n in reg.nodes(r).items()
            if n.get("state") == "failed"]


def _node_failure(reg, names) -> ClusterError:
    parts = []
    for name in names:
        role, i = name.split(":")
        node = reg.nodes(role).get(int(i), {})
        log_tail = node.get("log_tail") or tail(node.get("log", ""), 20)
        parts.append(f"{name} on {node.get('hostname', '?')} kept failing (exit code "
                     f"{node.get('exit_code')}, {node.get('restarts', 0)} restarts); log "
                     f"{node.get('log')}, last lines:\n{log_tail}")
    return ClusterError("TF process failed: " + "\n".join(parts))


def _unreachable(lines: list) -> ClusterError:
    return ClusterError("the TF cluster cannot form:\n" + "\n".join(f"--- {line}" for line in lines) + f"\n{FIX}.")


def form_cluster(h, layout: _Nodes, generation: int = 0) -> dict:
    """Wait for every node, publish the cluster spec, wait for every TF server; returns the nodes."""
    reg, opts, say = h.registry, h.opts, h.console.say
    ps, workers = layout.ps, layout.workers
    total = ps + workers
    seen = {"n": -1}

    def registered():
        _check_jobs(h)
        h.check_killed()
        missing = _missing(reg, ps, workers)
        if total - len(missing) != seen["n"]:
            seen["n"] = total - len(missing)
            hosts = sorted({n.get("hostname", "?") for r in ("ps", "worker") for n in reg.nodes(r).values()})
            say(f"nodes registered {seen['n']}/{total}" + (f" on {', '.join(hosts)}" if hosts else ""))
        return not missing

    def too_slow():
        missing = _missing(reg, ps, workers)
        return ClusterError(
            f"only {total - len(missing)} of {total} nodes registered within "
            f"{opts.register_timeout:.0f}s; missing {', '.join(missing)}. The cluster needs {total} "
            f"Spark tasks running at once ({ps} ps + {workers} workers)" + _room_advice(h, missing))

    try:
        h.jobs.wait_for_nodes("worker", registered, opts.register_timeout, too_slow)
    finally:
        if generation == 0:
            h.journal.mark("register")  # waiting for nodes is registration, also when it fails

    def spooled():
        _check_jobs(h)
        h.check_killed()
        if generation == 0:
            _feed_progress(h, reg.nodes("worker"))
        return not _missing(reg, ps, workers, want_states={"reserved", "running", "restarting"})

    wait_until(spooled, opts.feed_timeout, interval=0.3, on_timeout=lambda: ClusterError(
        f"the feed did not finish within {opts.feed_timeout:.0f}s; still waiting for "
        f"{', '.join(_missing(reg, ps, workers, want_states={'reserved'}))}"))
    if generation == 0:
        h.journal.mark("feed")
    nodes = {role: reg.nodes(role) for role in ("ps", "worker")}
    spec = {"chief": [layout.chief],
            "ps": [f"{nodes['ps'][i]['host']}:{nodes['ps'][i]['port']}" for i in range(ps)],
            "worker": [f"{nodes['worker'][i]['host']}:{nodes['worker'][i]['port']}" for i in range(workers)]}
    reg.publish_cluster({"generation": generation, "cluster": spec})
    if generation:
        reg.set_state("restarting", generation=generation)

    def running():
        _check_jobs(h)
        failed = _failed_nodes(reg)
        if failed:
            raise _node_failure(reg, failed)
        if _missing(reg, ps, workers, want_states={"running"}, generation=generation):
            return False
        checked = reg.nodes("worker")
        if not all(n.get("reached") == generation for n in checked.values()):
            return False  # every worker's verdict, to name them all
        blocked = [f"worker:{i} on {n.get('hostname', '?')} cannot reach {n['cannot_reach']}"
                   for i, n in sorted(checked.items()) if n.get("cannot_reach")]
        if blocked:
            raise _unreachable(blocked)
        return True

    def not_running():
        missing = _missing(reg, ps, workers, {"running"}, generation)
        unchecked = [f"worker:{i} (checking it reaches the parameter servers)"
                     for i, n in sorted(reg.nodes("worker").items()) if n.get("reached") != generation]
        return ClusterError(f"TF servers did not start within {limit:.0f}s: " + ", ".join(missing or unchecked))

    limit = START_TIMEOUT + PEER_TIMEOUT + 30  # each TF server starts, then the workers probe the PS
    wait_until(running, limit, interval=0.2, on_timeout=not_running)
    addresses = {f"{role}:{i}": a for role in ("ps", "worker") for i, a in enumerate(spec[role])}
    missed = unreachable(addresses, opts.register_timeout)  # from the coordinator's host
    if missed:
        raise _unreachable([f"the driver's host {socket.gethostname()}, where the coordinator runs, "
                            f"cannot reach {describe(missed, addresses)}"])
    reg.set_state("running", generation=generation)
    h.console.done()
    if generation == 0:
        say("fed " + ", ".join(_fed(i, reg.nodes("worker")[i]) for i in range(workers)))
        say(f"node logs: {os.path.join(h.node_dir, 'logs')}/<role>-<index>.log")
    say(f"cluster up: {ps} ps, {workers} workers, chief {spec['chief'][0]}"
        + (f" (generation {generation})" if generation else ""))
    h.journal.event("cluster", spec=spec, generation=generation)
    return {"spec": spec, "generation": generation,
            **{r: reg.nodes(r) for r in ("ps", "worker")}}


@dataclass(frozen=True)
class Fault:
    """Why an attempt of ``train`` ended early: ``node`` (``"ps:0"``; None for the coordinator
    itself) and ``what`` happened to it. ``str()`` is how the console and the events say it."""

    node: str | None
    what: str

    @property
    def key(self) -> str:
        """What the restart policy tallies: the node, or ``"coordinator"``."""
        return self.node or "coordinator"

    def __str__(self) -> str:
        return f"{self.node} {self.what}" if self.node else f"coordinator: {self.what}"


RERUN = "came back at a new address (its Spark task was rerun)"


def _coordinator(h, number: int) -> TrainerProcess:
    """The training process of attempt ``number``, started now (TensorFlow imports while the
    cluster forms); its output shows wherever the driver's does, and in ``coordinator/``."""
    base = os.path.join(h.app_dir, "coordinator")
    env = {**h.train_spec.backend.process_env(), **os.environ,
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    # The coordinator's cores are the driver's (it runs no step itself: it schedules them).
    env.update(tf_thread_env(int(h.ops.conf("spark.driver.cores", "1") or 1), env))
    env = trainer_env(env, h.opts.tf_log, os.path.join(base, "tf-import.log"))
    return TrainerProcess(env, os.path.join(base, f"attempt-{number}.log"), echo=True)


def _attempt(h, number: int, feeds: dict, cluster_spec: dict) -> Attempt:
    base = os.path.join(h.app_dir, "coordinator")
    return Attempt(index=0, number=number, feeds=feeds, result=os.path.join(base, f"attempt-{number}.result.json"),
                   staging=os.path.join(base, "staging"), cluster=cluster_spec)


def _supervise(coordinator: TrainerProcess, problem) -> tuple[TrainOutcome, Fault | None]:
    """Wait for the attempt to end; ``problem()`` naming a cluster fault ends it early."""
    while True:
        if coordinator.poll() is not None:
            return coordinator.outcome(), None
        fault = problem()
        if fault is not None:
            coordinator.stop()
            return TrainOutcome(False, "cluster", str(fault)), fault
        time.sleep(0.2)


class TopologyWatch:
    """Called while ``train`` runs: names a node whose TF server can no longer serve the published
    spec (the attempt must end), or None. Also says and records what recovers by itself: a
    worker's TF process restarted in place by its node task, a node whose ZooKeeper session was lost
    and came back."""

    def __init__(self, h: Handles, cluster: dict, in_place: Counter):
        self.h, self.spec, self.in_place = h, cluster["spec"], in_place
        self.restarts = {(r, i): n.get("restarts", 0) for r in ("ps", "worker") for i, n in cluster[r].items()}
        self.absent: set = set()

    def __call__(self) -> Fault | None:
        self.h.check_killed()
        try:
            for role in ("ps", "worker"):
                nodes = self.h.registry.nodes(role)
                for i, address in enumerate(self.spec[role]):
                    problem = self._check(role, i, address, nodes.get(i))
                    if problem:
                        return problem
        except Exception:
            return None  # ZooKeeper unreachable for a moment: training does not depend on it
        return None

    def _check(self, role: str, i: int, address: str, node: dict | None) -> Fault | None:
        name, h = f"{role}:{i}", self.h
        if node is None:  # a lost session re-registers; a dead node task's rerun shows as a new address
            if name not in self.absent:
                self.absent.add(name)
                h.journal.event("session_lost", node=name)
                h.console.say(f"{name} left ZooKeeper (session lost or its task died); waiting for it")
            return None
        if name in self.absent:
            self.absent.discard(name)
            h.journal.event("reregistered", node=name)
            h.console.say(f"{name} registered again")
        if f"{node.get('host')}:{node.get('port')}" != address:
            return Fault(name, RERUN)
        if node.get("state") == "failed":
            return Fault(name, "failed")
        restarts = node.get("restarts", 0)
        if restarts > self.restarts.get((role, i), 0):
            if role == "ps":
                return Fault(name, "TF process died and was restarted")
            # ParameterServerStrategy retries the lost worker's steps elsewhere: train goes on.
            self.in_place[f"{name} in place"] += restarts - self.restarts.get((role, i), 0)
            self.restarts[(role, i)] = restarts
            h.journal.event("restart", cause=f"{name} in place", by=f"{name} in place", exit_code=node.get("exit_code"))
            h.console.say(f"{name}'s TF process died (exit code {node.get('exit_code')}); its node "
                          "task restarted it in place and training goes on")
        return None


def _cause_of(outcome: TrainOutcome, fault: Fault | None, h: Handles, cluster: dict, wait: float = 5.0) -> Fault:
    """Why the attempt ended. A PS loss often reaches the coordinator before the PS's node task has
    noticed its child died: give the node tasks a moment to say so."""
    if fault is not None and fault.what == RERUN:
        return Fault(fault.node, "rerun by Spark")

    def lost_ps():
        for i, node in h.registry.nodes("ps").items():
            if node.get("restarts", 0) > cluster["ps"].get(i, {}).get("restarts", 0) \
                    or node.get("state") in ("restarting", "failed"):
                return Fault(f"ps:{i}", "lost")
        return None

    try:
        found = wait_until(lost_ps, wait, interval=0.2)
    except Exception:  # no PS lost (TimeoutError), or ZooKeeper unreachable: the coordinator's
        found = None   # own error is the cause
    return found or Fault(None, (str(fault) if fault else outcome.error or "unknown").splitlines()[0][:200])


def run_ps(h: Handles, frame) -> Trained:
    """Run the job in PS mode: its nodes fed ``frame``, ``train`` in the coordinator."""
    opts = h.opts
    layout = _Nodes(opts.ps, opts.workers, chief=f"{h.advertised_host}:{free_port()}",
                    profiles=build_profiles(h.ops.conf, opts, h.master, h.console.say))
    coordinator = _coordinator(h, 0)
    try:
        _launch(h, layout, frame)
        cluster = form_cluster(h, layout)
        h.journal.mark("servers")
        plan = h.node_spec.plan
        policy = RestartPolicy(opts.max_restarts)
        in_place: Counter = Counter()  # workers' TF processes restarted by their node tasks
        attempt = 0
        while True:
            # A worker whose Spark task was rerun spooled again, on another host perhaps: each
            # generation reads the spools where the workers published them.
            feeds = _feeds(plan, cluster, opts.workers)
            coordinator.send(h.train_spec, _attempt(h, attempt, feeds, cluster["spec"]))
            if attempt == 0:
                h.console.say("training: train(ctx) runs in the coordinator (TF chief)")
            outcome, fault = _supervise(coordinator, TopologyWatch(h, cluster, in_place))
            if outcome.ok:
                break
            failed = _failed_nodes(h.registry)
            if failed:
                raise _node_failure(h.registry, failed)
            if outcome.kind == "user":
                raise UserCodeError(f"train raised {outcome.error}", details=outcome.traceback)
            cause = _cause_of(outcome, fault, h, cluster)
            delay = policy.next_delay(cause.key)
            h.journal.event("failure", cause=str(cause), attempt=attempt, error=outcome.error)
            if delay is None:
                raise _gave_up(h, policy, cause, outcome)
            h.console.say(f"restart {policy.restarts}/{opts.max_restarts}: {cause}; "
                          f"re-forming the cluster in {delay:.0f}s, train resumes from the latest checkpoint")
            time.sleep(delay)  # backoff between restarts, not a synchronisation
            attempt += 1
            coordinator = _coordinator(h, attempt)
            cluster = form_cluster(h, layout, generation=attempt)
            h.journal.event("restart", cause=str(cause), by=cause.key, attempt=attempt)
        h.journal.mark("train")
        path = outcome.model_dir
        if path:
            h.console.say(f"model exported to {path} (load with tf.saved_model.load)")
        return Trained(path, rows={n: f.total_rows for n, f in feeds.items()},
                       per_worker_rows={n: list(f.rows) for n, f in feeds.items()},
                       restarts=policy.restarts + sum(in_place.values()),
                       restart_causes=dict(policy.causes + in_place))
    finally:
        coordinator.stop()


def _room_advice(h, missing: list) -> str:
    """What the cluster offers against what the missing nodes' executors ask for."""

    if not profiles_requested(h.opts):
        return (": check that the cluster has that many free task slots (executors x cores / "
                "spark.task.cpus), or raise --register-timeout.")
    wanted = shapes(h.opts)
    roles = sorted({name.split(":")[0] for name in missing})
    asked = "; ".join(f"{r}: {s.cores or h.ops.conf('spark.executor.cores', '1')} cores, "
                      f"{s.memory or h.ops.conf('spark.executor.memory', '1g')}"
                      for r, s in wanted.items() if r in roles)
    offers = cluster_offers(h.master)
    return (f": no executor of the {' and '.join(roles)} shape ({asked}) was granted. "
            + (f"The cluster's workers offer {describe_offers(offers)}, some of it held by other "
               "applications or executors. " if offers else "")
            + "Free room on the cluster, ask for smaller shapes, or raise --register-timeout.")


def _feeds(plan, cluster: dict, workers: int) -> dict:
    """The fed datasets as the cluster's workers spooled them (directories, chunks, rows)."""
    nodes = cluster["worker"]
    return {name: FeedInfo.gather(name, plan, [nodes[i]["spool"][name] for i in range(workers)])
            for name in plan.names}


def _gave_up(h, policy: RestartPolicy, cause: Fault, outcome: TrainOutcome) -> ClusterError:
    log_tail = ""
    if cause.node is not None:
        role, index = cause.node.split(":")
        info = h.registry.nodes(role).get(int(index), {})
        log_tail = f"\nlog of {cause.node} ({info.get('log')}), last lines:\n{tail(info.get('log', ''), 20)}"
    return ClusterError(f"giving up after {policy.restarts} restarts (--max-restarts "
                        f"{policy.max_restarts}); last failure: {cause}\n"
                        f"{outcome.error}{log_tail}")
