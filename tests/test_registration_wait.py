"""The registration wait against a real local Spark: what holds its timeout off and what does not.

The registry and console here are small stand-ins (no node ever registers, progress is not shown);
Spark, its status tracker, the node jobs' bookkeeping and the job threads are real.
"""
import threading
import time
from types import SimpleNamespace

import pytest

from elearn.driver.nodejobs import NodeJobs, SparkJobThread
from elearn.driver.sparkops import SparkOps


class TimedOut(Exception):
    pass


def _jobs(spark):
    return NodeJobs(f"wait-{time.monotonic_ns()}", SparkOps(spark),
                    registry=SimpleNamespace(nodes=lambda role: {}),
                    console=SimpleNamespace(progress=lambda key, msg: None))


def _planned_then_run(jobs, go: threading.Event):
    """A job of group "worker" that the driver needs a while to submit (``go`` ends the planning)."""
    def body():
        assert go.wait(60), "the test never released the planning"
        return jobs.ops.spark.sparkContext.parallelize(range(4), 2).map(lambda x: x * 2).sum()

    job = SparkJobThread(jobs, "worker", body, "planned late")
    jobs.threads.append(job)
    job.start()
    return job


def test_planning_the_job_does_not_count_against_the_timeout(local_spark):
    jobs, go = _jobs(local_spark), threading.Event()
    job = _planned_then_run(jobs, go)
    # Planning lasts three timeouts; the wait must outlive it and see the job finish.
    threading.Timer(3.0, go.set).start()
    t0 = time.monotonic()
    jobs.wait_for_nodes("worker", lambda: job.result is not None, timeout=1.0,
                        on_timeout=lambda: TimedOut("timed out while the driver was planning"))
    assert job.result == 12 and job.error is None
    assert time.monotonic() - t0 >= 2.5


def test_a_task_started_with_its_stage_holds_the_timeout_off(local_spark):
    """Spark's status store shows such a task only at the next executor heartbeat (10 s here):
    until then the stage reads 0 active tasks, which must not pass for a stalled wait."""
    jobs = _jobs(local_spark)

    def body():
        return jobs.ops.spark.sparkContext.parallelize([0], 1).map(lambda x: time.sleep(11) or 7).collect()

    job = SparkJobThread(jobs, "worker", body, "one long task")
    jobs.threads.append(job)
    job.start()
    jobs.wait_for_nodes("worker", lambda: job.result is not None, timeout=2.0,
                        on_timeout=lambda: TimedOut("timed out while the task ran"))
    assert job.result == [7]


@pytest.mark.parametrize("workers", [2, 3])
def test_a_job_that_cannot_be_scheduled_still_times_out(local_spark, workers):
    """A barrier stage wider than the cluster is never submitted: its thread looks like a driver
    still planning. ``blocked`` is the slot check allreduce mode passes (the task slots Spark
    reports, here local[2]'s 2, against the workers wanted): with 3 workers the wait times out
    after its timeout; with 2 (control) the same planning holds the timeout off until it ends."""
    jobs, go = _jobs(local_spark), threading.Event()
    job = _planned_then_run(jobs, go)

    def short_of_slots():
        slots = jobs.ops.slots()
        return slots is not None and slots < workers

    try:
        t0 = time.monotonic()
        if workers == 3:
            with pytest.raises(TimedOut):
                jobs.wait_for_nodes("worker", lambda: False, timeout=1.0,
                                    on_timeout=lambda: TimedOut("blocked"), blocked=short_of_slots)
            assert time.monotonic() - t0 < 10
        else:
            threading.Timer(3.0, go.set).start()
            jobs.wait_for_nodes("worker", lambda: job.result is not None, timeout=1.0,
                                on_timeout=lambda: TimedOut("timed out while the driver was planning"),
                                blocked=short_of_slots)
            assert job.result == 12 and time.monotonic() - t0 >= 2.5
    finally:
        go.set()
        job.join(60)


def test_no_job_thread_at_all_times_out(local_spark):
    jobs = _jobs(local_spark)
    t0 = time.monotonic()
    with pytest.raises(TimedOut):
        jobs.wait_for_nodes("worker", lambda: False, timeout=1.0, on_timeout=lambda: TimedOut("none"))
    assert time.monotonic() - t0 < 10
