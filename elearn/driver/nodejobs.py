"""The driver's side of the node jobs, shared by both modes.

Every node is one long Spark task of a node job, built from the DataFrame API alone: the features'
``mapInArrow`` for the workers (the feed), ``spark.range(n, numPartitions=n).mapInArrow`` for nodes
fed nothing, ``barrier=True`` for the allreduce group, ``profile=`` for a node shape. Each job runs
from a driver thread (:class:`SparkJobThread`) so the driver can watch the cluster meanwhile; the
registration wait (:meth:`NodeJobs.wait_for_nodes`) holds its timeout off while the job's own stages before
the node tasks (the features' ETL, the feed's shuffle) are still running.
"""
from __future__ import annotations

import json
import threading
import time

from elearn.cluster.registry import AppRegistry
from elearn.driver.console import Console
from elearn.driver.sparkops import SparkOps
from elearn.runtime.node_task import STATS_SCHEMA, arrow_task
from elearn.specs import NodeSpec


def job_tag(app_id: str, what: str) -> str:
    """The tag of the application's Spark jobs for ``what`` (a node role, or pre_train): elearn
    watches and cancels its own jobs by it, never the session's others."""
    return f"elearn-{app_id}-{what}"


class SparkJobThread(threading.Thread):
    """Runs ``body()`` (which collects a Spark job) with the jobs tagged as the application's
    ``role``, so that they, and only they, can be watched and cancelled.

    ``result`` holds what ``body`` returned, ``error`` what it raised; the driver's waits report
    either. :meth:`NodeJobs.release` joins these threads, and cancels their jobs if they do not end.
    """

    def __init__(self, jobs: "NodeJobs", role: str, body, description: str):
        super().__init__(name=f"elearn-{jobs.app_id}-{role}-job", daemon=True)
        self.ops, self.role, self.body, self.description = jobs.ops, role, body, description
        self.tag = jobs.tag(role)
        self.result, self.error = None, None

    def run(self):
        with self.ops.tagged(self.tag, self.description):
            try:
                self.result = self.body()
            except Exception as exc:  # reported by the driver's waits
                self.error = exc


class UpstreamProgress:
    """What the job of ``role`` computes before its node tasks start.

    The node tasks come last; the features' ETL and the repartition's shuffle must finish first
    (with adaptive execution they even run as separate jobs of the same group), and on real data
    they take a while. Waiting for registration meanwhile is not a hang. Any of these counts as
    work going on:

    - tasks of the group running beyond the registered nodes;
    - a job or stage of the group not seen before, or a stage whose completed count moved, and
      for ``staleness`` seconds after: Spark's status store writes a task's start only with a
      later event or at the next executor heartbeat (it is up to
      ``spark.executor.heartbeatInterval`` behind the scheduler), so a stage whose first tasks
      started right after it was submitted reads 0 active tasks until then;
    - the group's thread alive while none of its jobs runs: the driver is still planning one
      (the first, or the next adaptive-execution job; on a loaded machine that alone can outlast
      the timeout). No task waits for a slot then. At most ``PLANNING_LIMIT`` seconds in a row,
      and not when ``blocked()`` says the job cannot be scheduled (a barrier stage wider than
      the cluster is never submitted, so never seen).
    """

    PLANNING_LIMIT = 120.0

    def __init__(self, jobs: "NodeJobs", role: str, blocked=None):
        self.jobs, self.role, self.tag = jobs, role, jobs.tag(role)
        self.thread = f"elearn-{jobs.app_id}-{role}-job"
        self.blocked = blocked or (lambda: False)
        self.completed: dict[int, int] = {}  # stage -> completed tasks
        self.moved_at: float | None = None
        self.planning_since: float | None = None
        self.staleness = jobs.ops.heartbeat_seconds() + 2.0

    def _planning(self, now: float) -> bool:
        alive = any(t.role == self.role and t.is_alive() for t in self.jobs.threads)
        if not alive or self.blocked():
            self.planning_since = None
            return False
        if self.planning_since is None:
            self.planning_since = now
        return now - self.planning_since < self.PLANNING_LIMIT

    def __call__(self, registered: int) -> str | None:
        """A description of the work going on ("" if nothing to show yet), or None if none is."""
        try:
            now = time.monotonic()
            running, stages, active = self.jobs.ops.job_progress(self.tag, self.thread)
            parts = []
            for stage_id, done, total, stage_active in stages:
                if self.completed.get(stage_id) != done:
                    self.completed[stage_id] = done
                    self.moved_at = now
                if stage_active or done:
                    parts.append(f"stage {stage_id} {done}/{total} tasks done")
            if running:
                self.planning_since = None
            elif self._planning(now):
                return ""
            recent = self.moved_at is not None and now - self.moved_at < self.staleness
            # "" (work going on, nothing worth showing yet) still holds the deadline off.
            return ", ".join(parts) if recent or active > registered else None
        except Exception:  # progress is informative only
            return None


class NodeJobs:
    """The application's node jobs: each started from a driver thread, watched while the cluster
    forms, and at the end joined, or cancelled when they do not end by themselves."""

    def __init__(self, app_id: str, ops: SparkOps, registry: AppRegistry, console: Console):
        self.app_id, self.ops, self.registry, self.console = app_id, ops, registry, console
        self.threads: list[SparkJobThread] = []

    def tag(self, role: str) -> str:
        return job_tag(self.app_id, role)

    def start(self, role: str, spec: NodeSpec, frame=None, count: int = 0, barrier: bool = False,
              profile=None) -> SparkJobThread:
        """Start the node job of ``role``: one task per node, each running ``NodeTask`` with ``spec``.

        ``frame`` is the feed (one partition per worker); without it the job runs over ``count``
        rows in as many partitions. Returns the started job thread (also in ``threads``).
        """
        if profile is not None and self.ops.remote:
            profile.id  # created on the server now: a Connect session is known only to this thread

        def body():
            source = frame if frame is not None else self.ops.spark.range(count, numPartitions=count)
            task = arrow_task(spec, "worker" if role == "allreduce" else role, fed=frame is not None)
            rows = self.ops.map_in_arrow(source, task, STATS_SCHEMA, barrier, profile)
            return [json.loads(r.stats) for r in rows]

        job = SparkJobThread(self, role, body, f"elearn {role} nodes of {self.app_id}")
        self.threads.append(job)
        job.start()
        return job

    def wait_for_nodes(self, role: str, check, timeout: float, on_timeout, interval: float = 0.3,
                       blocked=None):
        """``wait_until(check)``, but the ``timeout`` counts only while ``role``'s Spark job shows
        no work of its own before the node tasks (see ``UpstreamProgress``); that work is shown
        instead."""
        deadline = time.monotonic() + timeout
        node_role = "worker" if role == "allreduce" else role
        upstream = UpstreamProgress(self, role, blocked)
        while True:
            result = check()
            if result:
                return result
            progress = upstream(len(self.registry.nodes(node_role)))
            if progress is not None:
                deadline = time.monotonic() + timeout
            if progress:
                self.console.progress(f"{role}-input", f"preparing the {role} feed: {progress}")
            elif time.monotonic() > deadline:
                raise on_timeout()
            time.sleep(interval)

    def release(self, grace: float) -> None:
        """Join the node jobs for ``grace`` seconds, then cancel those still running (only this
        application's jobs: the session may be the user's) and join them once more."""
        deadline = time.monotonic() + grace
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t for t in self.threads if t.is_alive()]
        for t in alive:
            self.ops.cancel(t.tag)
        for t in alive:
            t.join(10)

    def stats(self) -> list:
        """Per-node statistics the node jobs returned (restarts, attempts, rows, seconds)."""
        return sorted((s for t in self.threads if t.result for s in t.result),
                      key=lambda s: (s["role"], s["index"]))
