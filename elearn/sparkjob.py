"""A Spark job run from a driver thread, so the driver can watch the cluster while it runs."""
from __future__ import annotations

import threading


class SparkJobThread(threading.Thread):
    """Runs ``body()`` (which collects a Spark job) under the application's job group ``role``.

    ``result`` holds what ``body`` returned, ``error`` what it raised; the driver's waits report
    either. ``app.close()`` joins these threads, and cancels their jobs if they do not end.
    """

    def __init__(self, app, role: str, body, description: str):
        super().__init__(name=f"elearn-{role}-job", daemon=True)
        self.app, self.role, self.body, self.description = app, role, body, description
        self.result, self.error = None, None

    def run(self):
        self.app.spark.sparkContext.setJobGroup(f"{self.app.id}-{self.role}", self.description,
                                                interruptOnCancel=True)
        try:
            self.result = self.body()
        except Exception as exc:  # reported by the driver's waits
            self.error = exc


def upstream_progress(app, role: str, registered: int) -> str | None:
    """What the job of ``role`` computes before its node tasks start, or None.

    The node tasks come last; the features' ETL and the repartition's shuffle must finish first
    (with adaptive execution they even run as separate jobs of the same group), and on real data
    they take a while. Tasks running beyond the ``registered`` nodes are that work: waiting for
    registration meanwhile is not a hang.
    """
    try:
        tracker = app.spark.sparkContext.statusTracker()
        active, parts = 0, []
        for job_id in tracker.getJobIdsForGroup(f"{app.id}-{role}"):
            job = tracker.getJobInfo(job_id)
            if job is None or job.status != "RUNNING":
                continue
            for stage_id in list(job.stageIds):
                stage = tracker.getStageInfo(stage_id)
                if stage is not None and stage.numActiveTasks > 0:
                    active += stage.numActiveTasks
                    parts.append(f"stage {stage_id} {stage.numCompletedTasks}/{stage.numTasks} tasks done")
        return ", ".join(parts) if active > registered else None
    except Exception:  # progress is informative only
        return None


def wait_for_nodes(app, role: str, check, timeout: float, on_timeout, interval: float = 0.3):
    """``wait_until(check)``, but the ``timeout`` counts only while ``role``'s Spark job runs no
    task beyond its registered nodes (see ``upstream_progress``); that work is shown instead."""
    import time

    deadline = time.monotonic() + timeout
    node_role = "worker" if role == "allreduce" else role
    while True:
        result = check()
        if result:
            return result
        progress = upstream_progress(app, role, len(app.registry.nodes(node_role)))
        if progress:
            deadline = time.monotonic() + timeout
            app.console.progress(f"{role}-input", f"preparing the {role} feed: {progress}")
        elif time.monotonic() > deadline:
            raise on_timeout()
        time.sleep(interval)
