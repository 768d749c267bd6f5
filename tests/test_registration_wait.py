"""The registration wait against a real local Spark: what holds its timeout off and what does not.

The application object here is a small stand-in for elearn's own bookkeeping (id, threads, the
registry's node count); Spark, its status tracker and the job threads are real.
"""
import threading
import time
from types import SimpleNamespace

import pytest

from elearn.nodejobs import SparkJobThread, wait_for_nodes
from elearn.sparkops import SparkOps


class TimedOut(Exception):
    pass


def _app(spark):
    app_id = f"wait-{time.monotonic_ns()}"
    return SimpleNamespace(id=app_id, spark=spark, threads=[], ops=SparkOps(spark),
                           tag=lambda what: f"elearn-{app_id}-{what}",
                           registry=SimpleNamespace(nodes=lambda role: {}),
                           console=SimpleNamespace(progress=lambda key, msg: None))


def _planned_then_run(app, go: threading.Event):
    """A job of group "worker" that the driver needs a while to submit (``go`` ends the planning)."""
    def body():
        assert go.wait(60), "the test never released the planning"
        return app.spark.sparkContext.parallelize(range(4), 2).map(lambda x: x * 2).sum()

    job = SparkJobThread(app, "worker", body, "planned late")
    app.threads.append(job)
    job.start()
    return job


def test_planning_the_job_does_not_count_against_the_timeout(local_spark):
    app, go = _app(local_spark), threading.Event()
    job = _planned_then_run(app, go)
    # Planning lasts three timeouts; the wait must outlive it and see the job finish.
    threading.Timer(3.0, go.set).start()
    t0 = time.monotonic()
    wait_for_nodes(app, "worker", lambda: job.result is not None, timeout=1.0,
                   on_timeout=lambda: TimedOut("timed out while the driver was planning"))
    assert job.result == 12 and job.error is None
    assert time.monotonic() - t0 >= 2.5


def test_a_task_started_with_its_stage_holds_the_timeout_off(local_spark):
    """Spark's status store shows such a task only at the next executor heartbeat (10 s here):
    until then the stage reads 0 active tasks, which must not pass for a stalled wait."""
    app = _app(local_spark)

    def body():
        return app.spark.sparkContext.parallelize([0], 1).map(lambda x: time.sleep(11) or 7).collect()

    job = SparkJobThread(app, "worker", body, "one long task")
    app.threads.append(job)
    job.start()
    wait_for_nodes(app, "worker", lambda: job.result is not None, timeout=2.0,
                   on_timeout=lambda: TimedOut("timed out while the task ran"))
    assert job.result == [7]


def test_a_job_that_cannot_be_scheduled_still_times_out(local_spark):
    app, go = _app(local_spark), threading.Event()
    job = _planned_then_run(app, go)
    try:
        t0 = time.monotonic()
        with pytest.raises(TimedOut):
            wait_for_nodes(app, "worker", lambda: False, timeout=1.0,
                           on_timeout=lambda: TimedOut("blocked"), blocked=lambda: True)
        assert time.monotonic() - t0 < 10
    finally:
        go.set()
        job.join(60)


def test_no_job_thread_at_all_times_out(local_spark):
    app = _app(local_spark)
    t0 = time.monotonic()
    with pytest.raises(TimedOut):
        wait_for_nodes(app, "worker", lambda: False, timeout=1.0, on_timeout=lambda: TimedOut("none"))
    assert time.monotonic() - t0 < 10
