"""Allreduce mode on the driver: launch the barrier stage and report what the group did.

``train(ctx)`` runs in every worker's training process (see ``elearn.mpi.node`` and
``elearn.train.trainer``); the driver ships the job there, waits for the tasks to register and
then for the stage to end, says each restart of the group as it happens, and turns the tasks'
outcomes into the result: the chief's exported model, or an error with every failed worker's last
lines.
"""
from __future__ import annotations

import os
import shutil
from collections import Counter

from elearn.cluster.logtail import FollowedFile, relay, spark_error_message
from elearn.cluster.peers import FIX
from elearn.cluster.waits import FOREVER, wait_until
from elearn.driver.handles import Handles, Trained
from elearn.driver.nodejobs import SparkJobThread
from elearn.errors import ClusterError
from elearn.mpi.group import GroupRestarts


def _watch(h: Handles, stage: SparkJobThread) -> list:
    """Wait for the stage; say registration, restarts; fail with a reason when it cannot finish."""
    opts, say, reg = h.opts, h.console.say, h.registry
    restarts = GroupRestarts(h.registry)
    seen = {"registered": -1, "restarts": 0, "training": False, "metrics": 0}
    chief_log = FollowedFile(os.path.join(h.node_dir, "logs", "worker-0.log"))

    def registered():
        h.check_killed()
        if stage.error is not None or not stage.is_alive():
            return True
        n = len(reg.nodes("worker"))
        if n != seen["registered"]:
            seen["registered"] = n
            say(f"workers registered {n}/{opts.workers}")
        return n >= opts.workers

    def short_of_slots():
        slots = h.ops.slots()
        return slots is not None and slots < opts.workers

    def too_slow():
        if short_of_slots():
            return _too_few_slots(h)
        return ClusterError(
            f"only {len(reg.nodes('worker'))} of {opts.workers} allreduce workers started within "
            f"{opts.register_timeout:.0f}s. A barrier stage needs all {opts.workers} tasks running "
            "at once: check that the cluster has that many free task slots (executors x cores / "
            "spark.task.cpus), or raise --register-timeout.")

    try:
        h.jobs.wait_for_nodes("allreduce", registered, opts.register_timeout, on_timeout=too_slow,
                              blocked=short_of_slots)
    finally:
        h.journal.mark("register")  # waiting for workers is registration, also when it fails

    def finished():
        h.check_killed()  # the workers see the application marked failed and stop their TF
        nodes = reg.nodes("worker")
        if not seen["training"] and any(n.get("state") == "running" for n in nodes.values()):
            seen["training"] = True
            reg.set_state("running")
            h.journal.mark("feed")
            say(f"training: train(ctx) runs in {opts.workers} worker processes "
                f"(logs: {os.path.join(h.node_dir, 'logs')})")
        for req in restarts.all()[seen["restarts"]:]:
            seen["restarts"] += 1
            if req["attempt"] < opts.max_restarts and not req.get("final"):
                say(f"restart {req['attempt'] + 1}/{opts.max_restarts} of the group: {req['reason']}")
                h.journal.event("restart", cause=req["reason"], by=req["what"], attempt=req["attempt"])
            elif not req.get("final"):
                say(f"{req['reason']}; no restarts left (--max-restarts {opts.max_restarts})")
        relay(chief_log.new_lines())  # the chief's output, as PS mode shows the coordinator's
        return not stage.is_alive()

    wait_until(finished, FOREVER, interval=0.5)
    relay(chief_log.new_lines(final=True))
    if stage.error is not None:
        if "SPARK-24819" in str(stage.error):  # Spark's barrier slot check gave up
            raise _too_few_slots(h) from stage.error
        raise ClusterError(f"the allreduce Spark job failed: {spark_error_message(stage.error)}") from stage.error
    return sorted(stage.result or [], key=lambda s: s["index"])


def _too_few_slots(h: Handles) -> ClusterError:
    """The barrier stage cannot start: say so with the numbers a user can act on."""
    workers, slots, executors = h.opts.workers, h.ops.slots(), h.ops.executors()
    offered = f"{slots} task slots on {executors} executor(s)" if slots is not None and executors is not None \
        else "fewer task slots"
    cpus = h.ops.conf("spark.task.cpus", "1")
    return ClusterError(
        f"too few Spark slots: allreduce mode runs its {workers} workers as one barrier stage, all "
        f"at once, but the cluster offered {offered} (executor cores / spark.task.cpus {cpus}) "
        f"for {h.opts.register_timeout:.0f}s (--register-timeout). Give it at least {workers} "
        "slots (--conf spark.executor.instances, spark.executor.cores, or spark.cores.max on a "
        "standalone cluster), or ask for fewer --workers.")


def _failure(stats: list, max_restarts: int) -> ClusterError:
    errors = [e for s in stats for e in s.get("errors", [])]
    if any(s.get("aborted") for s in stats):
        return ClusterError("the allreduce workers were stopped before training finished")
    blocked = {e["worker"]: e["reason"] for e in errors if e.get("unreachable")}  # every worker says it
    if blocked:
        return ClusterError("allreduce workers cannot reach each other's TF ports, so training did not "
                            "start (not retried: another attempt would meet the same network):\n"
                            + "\n".join(f"--- {blocked[w]}" for w in sorted(blocked)) + f"\n{FIX}.")
    # Workers stopped because a peer failed say so; the failures themselves come first.
    errors.sort(key=lambda e: bool(e.get("stopped")))
    shown, lines = set(), []
    for e in errors:
        if e["worker"] in shown or e.get("stopped") and lines:
            continue
        shown.add(e["worker"])
        lines.append(f"--- {e['reason']} (attempt {e['attempt'] + 1})")
        if e.get("error"):
            lines.append(e["error"])
    attempts = max(len(s.get("attempts", [])) for s in stats)
    if any(e.get("final") for e in errors):
        return ClusterError(f"allreduce training failed in attempt {attempts}, not retried: the "
                            "job's own code or input failed, and would fail the same way again\n"
                            + "\n".join(lines))
    return ClusterError(f"allreduce training failed in all {attempts} attempts "
                        f"(--max-restarts {max_restarts}); the workers' last errors:\n" + "\n".join(lines))


def run_allreduce(h: Handles, frame) -> Trained:
    """Run the job in allreduce mode: one barrier stage of workers fed ``frame``, each training."""
    plan = h.node_spec.plan
    stage = h.jobs.start("allreduce", h.node_spec, frame=frame, count=h.opts.workers, barrier=True)
    stats = _watch(h, stage)
    if h.single_host:  # the tasks removed their own parts; this is their empty parent
        shutil.rmtree(os.path.join(h.node_dir, "allreduce"), ignore_errors=True)
    h.journal.mark("train")
    if len(stats) != h.opts.workers:
        raise ClusterError(f"the allreduce stage returned {len(stats)} of {h.opts.workers} workers")
    if not all(s.get("ok") for s in stats):
        raise _failure(stats, h.opts.max_restarts)
    restarts = stats[0]["restarts"]
    if restarts:
        h.console.say(f"training succeeded after {restarts} restart(s) of the group")
    model_dir = stats[0].get("model_dir")
    if model_dir:
        h.console.say(f"model exported to {model_dir} (load with tf.saved_model.load)")
    h.journal.event("allreduce", restarts=restarts, rows=[s["feed_rows"] for s in stats])
    per_worker = {n: [s["feed_rows"].get(n, 0) for s in stats] for n in plan.names}
    # The tally counts kinds ("killed by SIGKILL"), not workers.
    causes = Counter(r["what"] for r in GroupRestarts(h.registry).all()[:restarts])
    return Trained(model_dir, rows={n: sum(v) for n, v in per_worker.items()}, per_worker_rows=per_worker,
                   restarts=restarts, restart_causes=dict(causes))

