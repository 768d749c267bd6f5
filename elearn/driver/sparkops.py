"""What elearn does to a running SparkSession, the same way on a classic session and a Spark Connect one.

elearn's Spark work is the DataFrame API alone (``mapInArrow`` with ``barrier=`` and ``profile=``,
``spark.range``, SQL), which a classic session and a Spark Connect session run alike. What differs,
and lives here only:

- **marking and cancelling elearn's own jobs** (a session may be the user's, running their work
  too: only elearn's jobs are ever cancelled). A classic session uses a job group per thread, which
  its status tracker also reports by; cancelling a group works from any thread. Over Connect a
  job tag is added in the thread that runs the job and ``interruptTag`` works from any thread.
  (Classic ``SparkSession.interruptTag`` from another thread cancels nothing: it looks the tag up
  in the calling thread's own tags.)
- **progress** of a job before its node tasks start: the status tracker on a classic session;
  Connect's progress handler (called in the thread that collects, about every 2 s) otherwise.
- **the cluster's task slots**: asked of the JVM on a classic session; unknown over Connect, where
  a barrier stage wider than the cluster is caught by its lack of progress instead.
- **shipping files** to the executors: ``addPyFile``/``addArchive`` of the SparkContext, or
  ``addArtifacts`` over Connect.
- **a node job's shape** (a ResourceProfile): ``mapInArrow(profile=)`` on Spark 4.0+; before it a
  classic session attaches the profile to the RDD that ends the same stage, and a Connect 3.5
  client cannot apply one at all (it has neither).
"""
from __future__ import annotations

import contextlib
import inspect
import threading
import time


def is_connect(spark) -> bool:
    """Whether ``spark`` is a Spark Connect session (by its class: ``is_remote()`` reflects a
    process-wide setting, not the session at hand)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


class SparkOps:
    def __init__(self, spark):
        self.spark = spark
        self.remote = is_connect(spark)
        self._stages: dict[str, dict] = {}     # Connect: job thread name -> {stage id: (done, total)}
        self._inflight: dict[str, int] = {}
        self._moved: dict[str, float] = {}
        self._handler = None

    def watch_progress(self) -> None:
        """Start collecting Connect's progress reports (a classic session's tracker needs none)."""
        if self.remote and self._handler is None and hasattr(self.spark, "registerProgressHandler"):
            self._handler = self._on_progress
            self.spark.registerProgressHandler(self._handler)

    # -- what the session is -------------------------------------------------------------------
    @property
    def master(self) -> str:
        if self.remote:
            return self.spark.conf.get("spark.master", "unknown")
        return self.spark.sparkContext.master  # conf may say otherwise for a reused session

    def conf(self, key: str, default: str | None = None) -> str | None:
        """A Spark setting of the running application (``default`` when it is not set)."""
        if self.remote:
            try:
                return self.spark.conf.get(key, default)
            except Exception:
                return default
        return self.spark.sparkContext.getConf().get(key, default)

    def heartbeat_seconds(self) -> float:
        text = self.conf("spark.executor.heartbeatInterval", "10s") or "10s"
        try:
            return float(text[:-2]) / 1000 if text.endswith("ms") else float(text.rstrip("s"))
        except ValueError:
            return 10.0

    # -- elearn's jobs -------------------------------------------------------------------------
    @contextlib.contextmanager
    def tagged(self, tag: str, description: str = ""):
        """Jobs this thread starts in the block carry ``tag`` (no comma in it)."""
        if self.remote:
            self.spark.addTag(tag)
            try:
                yield
            finally:
                self.spark.removeTag(tag)
            return
        sc = self.spark.sparkContext
        sc.setJobGroup(tag, description or tag, interruptOnCancel=True)
        try:
            yield
        finally:
            # The thread may be the user's (pre_train runs in it): its later jobs are not ours.
            sc.setLocalProperty("spark.jobGroup.id", None)
            sc.setLocalProperty("spark.job.description", None)

    def cancel(self, tag: str) -> None:
        """Cancel the running jobs that carry ``tag``, and only those (from any thread)."""
        try:
            if self.remote:
                self.spark.interruptTag(tag)
            else:
                self.spark.sparkContext.cancelJobGroup(tag)
        except Exception:  # the session is stopping: nothing left to cancel
            pass

    # -- progress ----------------------------------------------------------------------------------
    def _on_progress(self, stages, inflight_tasks, operation_id, done) -> None:
        name = threading.current_thread().name
        seen = self._stages.setdefault(name, {})
        for stage in stages:
            now = (stage.num_completed_tasks, stage.num_tasks)
            if seen.get(stage.stage_id) != now:
                seen[stage.stage_id] = now
                self._moved[name] = time.monotonic()
        self._inflight[name] = inflight_tasks

    def job_progress(self, tag: str, thread_name: str) -> tuple[bool, list, int]:
        """``(running, stages, active tasks)`` of the jobs ``tag`` marks, run from the thread
        ``thread_name``; stages are ``(stage id, completed, total, active)``."""
        if self.remote:
            stages = [(sid, done, total, 0) for sid, (done, total) in self._stages.get(thread_name, {}).items()
                      if done < total]
            return bool(stages), stages, self._inflight.get(thread_name, 0)
        tracker = self.spark.sparkContext.statusTracker()
        running, stages, active = False, [], 0
        for job_id in tracker.getJobIdsForGroup(tag):
            job = tracker.getJobInfo(job_id)
            if job is None or job.status != "RUNNING":
                continue
            running = True
            for stage_id in list(job.stageIds):
                stage = tracker.getStageInfo(stage_id)
                if stage is None or stage.numCompletedTasks >= stage.numTasks:
                    continue
                stages.append((stage_id, stage.numCompletedTasks, stage.numTasks, stage.numActiveTasks))
                active += stage.numActiveTasks
        return running, stages, active

    # -- node jobs ----------------------------------------------------------------------------------
    def can_shape(self) -> bool:
        """Whether a node job can run in a ResourceProfile of its own (see ``map_in_arrow``)."""
        return _takes_profile(self.spark.range(0)) or not self.remote  # range: lazy, no round trip

    def map_in_arrow(self, frame, task, schema, barrier: bool, profile=None) -> list:
        """``frame.mapInArrow(task, schema, barrier=barrier)`` collected, its stage in ``profile``.

        Spark 3.5 has no ``mapInArrow(profile=)``; a stage runs in the profile of its RDDs, so
        ``.rdd.withResources(profile)`` on the mapInArrow's own output puts the same stage in it
        (a node job's output is one stats row per task: going through the RDD costs nothing).
        """
        if profile is None:
            return frame.mapInArrow(task, schema, barrier=barrier).collect()
        if _takes_profile(frame):
            return frame.mapInArrow(task, schema, barrier=barrier, profile=profile).collect()
        return frame.mapInArrow(task, schema, barrier=barrier).rdd.withResources(profile).collect()

    # -- the cluster ---------------------------------------------------------------------------------
    def slots(self) -> int | None:
        """Task slots of the default profile on the executors registered now (None: unknown)."""
        if self.remote:
            return None
        try:
            jsc = self.spark.sparkContext._jsc.sc()
            return int(jsc.maxNumConcurrentTasks(jsc.resourceProfileManager().defaultResourceProfile()))
        except Exception:  # an explanation, not the error
            return None

    def executors(self) -> int | None:
        if self.remote:
            return None
        try:  # minus the driver
            return max(0, self.spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1)
        except Exception:
            return None

    # -- files for the executors -------------------------------------------------------------------
    def add_py_files(self, paths: list[str]) -> None:
        """Put ``paths`` (.py, .zip, .egg) on every executor's import path."""
        if self.remote:
            self.spark.addArtifacts(*paths, pyfile=True)
            return
        for path in paths:
            self.spark.sparkContext.addPyFile(path)

    def add_archive(self, path: str) -> None:
        """Ship the archive ``path`` to every executor, unpacked under its file name."""
        if self.remote:
            self.spark.addArtifacts(path, archive=True)
        else:
            self.spark.sparkContext.addArchive(path)

    def close(self) -> None:
        if self._handler is not None:
            try:
                self.spark.removeProgressHandler(self._handler)
            except Exception:
                pass
            self._handler = None


def _takes_profile(frame) -> bool:
    """Whether ``frame.mapInArrow`` takes ``profile=`` (Spark 4.0+, classic and Connect alike)."""
    return "profile" in inspect.signature(frame.mapInArrow).parameters


def connect_takes_profile() -> bool:
    """Whether this pyspark's Spark Connect client takes ``mapInArrow(profile=)`` (4.0+), asked
    before a session exists. Without the Connect client installed, starting the session fails
    naming the packages to install, so no shape is refused here."""
    try:
        from pyspark.sql.connect.dataframe import DataFrame
    except Exception:
        return True
    return "profile" in inspect.signature(DataFrame.mapInArrow).parameters
