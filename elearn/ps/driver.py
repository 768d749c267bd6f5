"""PS mode on the driver: launch the PS and worker node jobs, form the cluster, supervise ``train``.

The two jobs run concurrently from driver threads (different executors may serve them, see the
design note); their tasks meet in ZooKeeper. The driver waits for every node with a timeout, then
publishes the TF cluster spec with a training process as ``chief`` (``elearn.runtime.trainer``, the
coordinator), which runs ``train(ctx)`` under ``ParameterServerStrategy``.

Recovery: a worker's TF process that dies is restarted in place by its node task and TensorFlow's
coordinator carries on. Anything else (a parameter server lost, a node whose Spark task was rerun
at a new address) ends the coordinator; the driver then re-forms the cluster under a new
generation and runs ``train`` again, which resumes from the latest checkpoint.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from elearn.errors import ClusterError, UserCodeError
from elearn.jsonlines import read_json
from elearn.logtail import spark_error_message, tail
from elearn.nodejobs import start_node_job, wait_for_nodes
from elearn.peers import FIX, PEER_TIMEOUT, describe, unreachable
from elearn.procs import free_port, popen_child, stop_process
from elearn.ps.node import START_TIMEOUT
from elearn.resources_profile import build_profiles
from elearn.restart import RestartPolicy
from elearn.runtime.feedspec import FeedInfo
from elearn.specs import Attempt
from elearn.waits import wait_until

log = logging.getLogger(__name__)


@dataclass
class _Nodes:
    """What the driver keeps about the PS-mode cluster between generations."""

    ps: int
    workers: int
    chief: str                                  # the coordinator's address in the cluster spec
    profiles: dict = field(default_factory=dict)


def _launch(app, nodes: _Nodes, frame, spec) -> None:
    # Workers run on the application's executors (of the worker shape); the PS on its own.
    start_node_job(app, "ps", spec, count=nodes.ps, profile=nodes.profiles.get("ps"))
    start_node_job(app, "worker", spec, frame=frame, count=nodes.workers)


def _check_jobs(app) -> None:
    for job in app.threads:
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


def _feed_progress(app, nodes: dict) -> None:
    parts = []
    for i in sorted(nodes):
        feed = nodes[i].get("feed")
        if nodes[i].get("state") != "spooling" or not feed:
            continue
        mb = feed["bytes"] / 1e6
        rate = feed["rows"] / max(feed["seconds"], 1e-3)
        parts.append(f"worker:{i} {feed['rows']:,} rows {mb:,.1f} MB ({rate:,.0f} rows/s)")
    if parts:
        app.console.progress("feed", "feeding: " + "; ".join(parts))


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


def form_cluster(app, layout: _Nodes, generation: int = 0) -> dict:
    """Wait for every node, publish the cluster spec, wait for every TF server; returns the nodes."""
    reg, opts, say = app.registry, app.opts, app.console.say
    ps, workers = layout.ps, layout.workers
    total = ps + workers
    seen = {"n": -1}

    def registered():
        _check_jobs(app)
        app.check_killed()
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
            f"Spark tasks running at once ({ps} ps + {workers} workers)" + _room_advice(app, missing))

    try:
        wait_for_nodes(app, "worker", registered, opts.register_timeout, too_slow)
    finally:
        if generation == 0:
            app.mark("register")  # waiting for nodes is registration, also when it fails

    def spooled():
        _check_jobs(app)
        app.check_killed()
        if generation == 0:
            _feed_progress(app, reg.nodes("worker"))
        return not _missing(reg, ps, workers, want_states={"reserved", "running", "restarting"})

    wait_until(spooled, opts.feed_timeout, interval=0.3, on_timeout=lambda: ClusterError(
        f"the feed did not finish within {opts.feed_timeout:.0f}s; still waiting for "
        f"{', '.join(_missing(reg, ps, workers, want_states={'reserved'}))}"))
    if generation == 0:
        app.mark("feed")
    nodes = {role: reg.nodes(role) for role in ("ps", "worker")}
    spec = {"chief": [layout.chief],
            "ps": [f"{nodes['ps'][i]['host']}:{nodes['ps'][i]['port']}" for i in range(ps)],
            "worker": [f"{nodes['worker'][i]['host']}:{nodes['worker'][i]['port']}" for i in range(workers)]}
    reg.publish_cluster({"generation": generation, "cluster": spec})
    if generation:
        reg.set_state("restarting", generation=generation)

    def running():
        _check_jobs(app)
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
    app.console.done()
    if generation == 0:
        say("fed " + ", ".join(_fed(i, reg.nodes("worker")[i]) for i in range(workers)))
        say(f"node logs: {os.path.join(app.node_dir, 'logs')}/<role>-<index>.log")
    say(f"cluster up: {ps} ps, {workers} workers, chief {spec['chief'][0]}"
        + (f" (generation {generation})" if generation else ""))
    app.event("cluster", spec=spec, generation=generation)
    return {"spec": spec, "generation": generation,
            **{r: reg.nodes(r) for r in ("ps", "worker")}}


def relay_output(pipe, log_path: str) -> None:
    """Copy a child's output, line by line, to ``log_path`` and to the current ``sys.stdout``."""
    with pipe, open(log_path, "ab") as log_file:
        for line in iter(pipe.readline, b""):
            log_file.write(line)
            log_file.flush()
            try:
                sys.stdout.write(line.decode("utf-8", "replace"))
                sys.stdout.flush()
            except (OSError, ValueError):  # the driver's stdout is gone: the log still has it
                pass


class CoordinatorProcess:
    """One attempt of ``train``: a training process started early, so TensorFlow imports while the
    cluster forms, and given its ``(TrainSpec, Attempt)`` once the cluster is up."""

    def __init__(self, app, number: int):
        self.number = number
        base = os.path.join(app.dir, "coordinator")
        os.makedirs(base, exist_ok=True)
        self.config_path = os.path.join(base, f"attempt-{number}.pkl")
        self.result_path = os.path.join(base, f"attempt-{number}.result.json")
        for path in (self.config_path, self.result_path):
            if os.path.exists(path):
                os.remove(path)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        if not app.opts.tf_log:
            env["TF_CPP_MIN_LOG_LEVEL"] = "3"
            env["ELEARN_TF_IMPORT_LOG"] = os.path.join(base, "tf-import.log")
        # train's output (its prints, ctx.report lines) goes through this process's sys.stdout, so
        # that it shows wherever the driver's output shows: a terminal, a log, a notebook cell.
        self.log_path = os.path.join(base, f"attempt-{number}.log")
        self.proc = popen_child([sys.executable, "-u", "-m", "elearn.runtime.trainer", self.config_path],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env)
        self._relay = threading.Thread(target=relay_output, args=(self.proc.stdout, self.log_path),
                                       name=f"elearn-coordinator-{number}-output", daemon=True)
        self._relay.start()

    def configure(self, train_spec, feeds: dict, cluster_spec: dict) -> None:
        attempt = Attempt(index=0, number=self.number, feeds=feeds, result=self.result_path,
                          staging=os.path.join(os.path.dirname(self.result_path), "staging"),
                          cluster=cluster_spec)
        tmp = self.config_path + ".tmp"
        with open(tmp, "wb") as f:
            pickle.dump((train_spec, attempt), f)
        os.replace(tmp, self.config_path)

    def supervise(self, problem) -> dict:
        """Wait for the attempt to end; ``problem()`` naming a cluster fault ends it early."""
        while True:
            code = self.proc.poll()
            if code is not None:
                try:
                    return read_json(self.result_path)
                except (OSError, ValueError):
                    return {"status": "error", "kind": "cluster",
                            "error": f"the coordinator process exited with {code} without a result"}
            cause = problem()
            if cause:
                stop_process(self.proc, grace=3)
                return {"status": "error", "kind": "cluster", "error": cause}
            time.sleep(0.2)

    def stop(self) -> None:
        stop_process(self.proc, grace=3)
        self._relay.join(5)  # the last lines train printed come before the summary


class TopologyWatch:
    """Called while ``train`` runs: names a node whose TF server can no longer serve the published
    spec (the attempt must end), or None. Also says and records what recovers by itself: a
    worker's TF process restarted in place by its daemon, a node whose ZooKeeper session was lost
    and came back."""

    def __init__(self, app, cluster: dict, in_place: Counter):
        self.app, self.spec, self.in_place = app, cluster["spec"], in_place
        self.restarts = {(r, i): n.get("restarts", 0) for r in ("ps", "worker") for i, n in cluster[r].items()}
        self.absent: set = set()

    def __call__(self):
        self.app.check_killed()
        try:
            for role in ("ps", "worker"):
                nodes = self.app.registry.nodes(role)
                for i, address in enumerate(self.spec[role]):
                    problem = self._check(role, i, address, nodes.get(i))
                    if problem:
                        return problem
        except Exception:
            return None  # ZooKeeper unreachable for a moment: training does not depend on it
        return None

    def _check(self, role: str, i: int, address: str, node: dict | None) -> str | None:
        name, app = f"{role}:{i}", self.app
        if node is None:  # a lost session re-registers; a dead daemon's rerun shows as a new address
            if name not in self.absent:
                self.absent.add(name)
                app.event("session_lost", node=name)
                app.console.say(f"{name} left ZooKeeper (session lost or its task died); waiting for it")
            return None
        if name in self.absent:
            self.absent.discard(name)
            app.event("reregistered", node=name)
            app.console.say(f"{name} registered again")
        if f"{node.get('host')}:{node.get('port')}" != address:
            return f"{name} came back at a new address (its Spark task was rerun)"
        if node.get("state") == "failed":
            return f"{name} failed"
        restarts = node.get("restarts", 0)
        if restarts > self.restarts.get((role, i), 0):
            if role == "ps":
                return f"{name} TF process died and was restarted"
            # ParameterServerStrategy retries the lost worker's steps elsewhere: train goes on.
            self.in_place[f"{name} in place"] += restarts - self.restarts.get((role, i), 0)
            self.restarts[(role, i)] = restarts
            app.event("restart", cause=f"{name} in place", by=f"{name} in place", exit_code=node.get("exit_code"))
            app.console.say(f"{name}'s TF process died (exit code {node.get('exit_code')}); its daemon "
                            "restarted it in place and training goes on")
        return None


def _cause_of(outcome: dict, app, cluster: dict, wait: float = 5.0) -> str:
    """Why the attempt ended. A PS loss often reaches the coordinator before the PS's daemon has
    noticed its child died: give the daemons a moment to say so."""
    cause = outcome.get("error", "unknown")
    if "came back at a new address" in cause:
        return cause.split(" came back")[0] + " rerun by Spark"

    def lost_ps():
        for i, node in app.registry.nodes("ps").items():
            if node.get("restarts", 0) > cluster["ps"].get(i, {}).get("restarts", 0) \
                    or node.get("state") in ("restarting", "failed"):
                return f"ps:{i} lost"
        return None

    try:
        found = wait_until(lost_ps, wait, interval=0.2)
    except Exception:  # no PS lost (TimeoutError), or ZooKeeper unreachable: the coordinator's
        found = None   # own error is the cause
    return found or "coordinator: " + cause.splitlines()[0][:200]


def _cause_key(cause: str) -> str:
    """``"ps:0 lost"`` -> ``"ps:0"``; anything not naming a node -> ``"coordinator"``."""
    first = cause.split(" ")[0]
    return first if re.fullmatch(r"(ps|worker):\d+", first) else "coordinator"


def run_ps(app, job, frame, plan) -> dict:
    """Run ``job`` in PS mode; returns what the result needs (model path, rows fed)."""
    opts = app.opts
    layout = _Nodes(opts.ps, opts.workers, chief=f"{app.advertised_host}:{free_port()}",
                    profiles=build_profiles(app.ops.conf, opts, app.master, app.console.say))
    coordinator = CoordinatorProcess(app, 0)
    try:
        _launch(app, layout, frame, app.node_spec(plan))
        cluster = form_cluster(app, layout)
        app.mark("servers")
        feeds = _feeds(plan, cluster, opts.workers)
        train_spec = app.train_spec(job, plan, on_driver_host=True)
        policy = RestartPolicy(opts.max_restarts)
        in_place: Counter = Counter()  # workers' TF processes restarted by their node tasks
        attempt = 0
        while True:
            # A worker whose Spark task was rerun spooled again, on another host perhaps: each
            # generation reads the spools where the workers published them.
            feeds = _feeds(plan, cluster, opts.workers)
            coordinator.configure(train_spec, feeds, cluster["spec"])
            if attempt == 0:
                app.console.say("training: train(ctx) runs in the coordinator (TF chief)")
            outcome = coordinator.supervise(TopologyWatch(app, cluster, in_place))
            if outcome["status"] == "ok":
                break
            failed = _failed_nodes(app.registry)
            if failed:
                raise _node_failure(app.registry, failed)
            if outcome.get("kind") == "user":
                raise UserCodeError(f"train raised {outcome.get('error')}",
                                    details=outcome.get("traceback"))
            cause = _cause_of(outcome, app, cluster)
            delay = policy.next_delay(_cause_key(cause))
            app.event("failure", cause=cause, attempt=attempt, error=outcome.get("error"))
            if delay is None:
                raise _gave_up(app, policy, cause, outcome)
            app.console.say(f"restart {policy.restarts}/{opts.max_restarts}: {cause}; "
                            f"re-forming the cluster in {delay:.0f}s, train resumes from the latest checkpoint")
            time.sleep(delay)  # backoff between restarts, not a synchronisation
            attempt += 1
            coordinator = CoordinatorProcess(app, attempt)
            cluster = form_cluster(app, layout, generation=attempt)
            app.event("restart", cause=cause, by=_cause_key(cause), attempt=attempt)
        app.mark("train")
        path = outcome.get("model_dir")
        if path:
            app.console.say(f"model exported to {path} (load with tf.saved_model.load)")
        return {"model_dir": path, "rows": {n: f.total_rows for n, f in feeds.items()},
                "per_worker_rows": {n: list(f.rows) for n, f in feeds.items()},
                "restarts": policy.restarts + sum(in_place.values()),
                "restart_causes": dict(policy.causes + in_place)}
    finally:
        coordinator.stop()


def _room_advice(app, missing: list) -> str:
    """What the cluster offers against what the missing nodes' executors ask for."""
    from elearn.resources_profile import cluster_offers, describe_offers, profiles_requested, shapes

    if not profiles_requested(app.opts):
        return (": check that the cluster has that many free task slots (executors x cores / "
                "spark.task.cpus), or raise --register-timeout.")
    wanted = shapes(app.opts)
    roles = sorted({name.split(":")[0] for name in missing})
    asked = "; ".join(f"{r}: {s.cores or app.ops.conf('spark.executor.cores', '1')} cores, "
                      f"{s.memory or app.ops.conf('spark.executor.memory', '1g')}"
                      for r, s in wanted.items() if r in roles)
    offers = cluster_offers(app.master)
    return (f": no executor of the {' and '.join(roles)} shape ({asked}) was granted. "
            + (f"The cluster's workers offer {describe_offers(offers)}, some of it held by other "
               "applications or executors. " if offers else "")
            + "Free room on the cluster, ask for smaller shapes, or raise --register-timeout.")


def _feeds(plan, cluster: dict, workers: int) -> dict:
    """The fed datasets as the cluster's workers spooled them (directories, chunks, rows)."""
    nodes = cluster["worker"]
    return {name: FeedInfo.gather(name, plan, [nodes[i]["spool"][name] for i in range(workers)])
            for name in plan.names}


def _gave_up(app, policy: RestartPolicy, cause: str, outcome: dict) -> ClusterError:
    node = cause.split(" ")[0]
    log_tail = ""
    if re.fullmatch(r"(ps|worker):\d+", node):
        role, index = node.split(":")
        info = app.registry.nodes(role).get(int(index), {})
        log_tail = f"\nlog of {node} ({info.get('log')}), last lines:\n{tail(info.get('log', ''), 20)}"
    return ClusterError(f"giving up after {policy.restarts} restarts (--max-restarts "
                        f"{policy.max_restarts}); last failure: {cause}\n"
                        f"{outcome.get('error', '')}{log_tail}")
