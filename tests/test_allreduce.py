"""Allreduce mode end to end: real Spark (local), real ZooKeeper, real MultiWorkerMirroredStrategy
TF processes in a barrier stage, a real SIGKILL. The pl_submit fixture checks for orphans."""
import json
import os

import pytest
from conftest import job, lines, only_java

JOB = job("allreduce_classifier.py")
ACCURACY = 0.93  # linearly separable labels; 4 epochs reach ~0.98 on held-out rows
ROWS = 4001      # 2001 + 2000 rows: 41 and 40 batches of 50, so the workers' epochs differ


def summary(run):
    (app_dir,) = run.app_dirs()
    with open(os.path.join(app_dir, "summary.json")) as f:
        return app_dir, json.load(f)


def check_trained(run, out, keras):
    assert run.returncode == 0, run.output[-4000:]
    (result,) = lines(out)  # only the chief records
    assert result["keras"] == keras and result["workers"] == 2 and result["rows"] == ROWS
    assert result["accuracy"] >= ACCURACY, result
    app_dir, s = summary(run)
    assert s["mode"] == "allreduce"
    assert s["rows"]["train"]["total"] == ROWS and sorted(s["rows"]["train"]["per_worker"]) == [2000, 2001]
    # Only the chief's model is kept, and it loads with plain TensorFlow; no worker scratch is left.
    assert os.path.isfile(os.path.join(app_dir, "model", "saved_model.pb"))
    assert not os.path.exists(os.path.join(app_dir, "nodes", "allreduce"))
    assert "training: train(ctx) runs in 2 worker processes" in run.stdout
    return s


FAULTS = {  # worker 1's TF process, in epoch 2 of 4: (job args, Keras, the restart's cause)
    # tf_keras; frozen (no exit, no heartbeat): the group is restarted after --heartbeat-timeout,
    # which is sized so that a fresh training process starting on a loaded host (load 16 on 2 cores
    # took it past 8 s) is not taken for a frozen one.
    "SIGSTOP": (["--arg", "keras=tf_keras", "--arg", "freeze_at=1:5", "--heartbeat-timeout", 20], "tf_keras",
                "worker 1 stopped heart-beating for "),
    # Keras 3; killed.
    "SIGKILL": (["--arg", "kill_at=1:10"], "keras", "worker 1 killed by SIGKILL"),
}


@pytest.mark.parametrize("fault", [pytest.param("SIGSTOP", marks=pytest.mark.slow), "SIGKILL"])
def test_a_frozen_or_killed_worker_restarts_the_group_and_fit_resumes_from_the_last_epoch(pl_submit, tmp_path,
                                                                                       fault):
    args, keras, cause = FAULTS[fault]
    out, epochs, marker = tmp_path / "out.jsonl", tmp_path / "epochs.jsonl", tmp_path / "faulted"
    run = pl_submit(JOB, "--workers", 2, "--arg", f"out={out}", "--arg", f"epochs_file={epochs}",
                    "--arg", f"kill_marker={marker}", "--arg", f"rows={ROWS}", *args, timeout=900)
    s = check_trained(run, out, keras)
    assert marker.exists(), "worker 1 never reached epoch 2"
    assert f"restart 1/3 of the group: {cause}" in run.stdout
    # Epochs the chief began: 0 and 1 in the first attempt; the second resumes at 1, not 0.
    assert [e["epoch"] for e in lines(epochs)] == [0, 1, 1, 2, 3]
    assert s["restarts"]["total"] == 1
    if fault != "SIGKILL":
        return
    app_dir = run.app_dirs()[0]
    assert s["restarts"]["by_cause"] == {"killed by SIGKILL": 1}
    # The chief's resumed fit started at epoch 1 (step 41). What it had done of epoch 1 before
    # worker 1 died (at most 11 steps: up to batch 10), as far as its progress noted it (about
    # once a second, so none on a fast machine), is what the restart lost.
    (restore,) = [e for e in lines(os.path.join(app_dir, "events.jsonl")) if e["event"] == "restore"]
    assert restore["epoch"] == 1 and restore["step"] == 41 and restore["attempt"] == 1
    noted = [m["step"] for m in lines(os.path.join(app_dir, "metrics.jsonl"))
             if m["time"] < restore["time"] and isinstance(m.get("step"), int)]
    assert s["restarts"]["steps_lost"] == max(noted) - 41 <= 11, (noted, s["restarts"])
    # The chief's ctx.report() lines reach the driver's console and the summary.
    last = [ln for ln in run.stdout.splitlines() if "] step 164: " in ln]  # 4 epochs x 41 steps
    assert last and "loss=" in last[-1] and "accuracy=" in last[-1] and s["steps"] == 164


@pytest.mark.slow
def test_exhausted_restarts_fail_with_the_workers_last_errors(pl_submit, tmp_path):
    # Nothing fed (pre_train returns None): the barrier stage runs over spark.range(2).
    # Worker 1's process is killed in every attempt: a lost process is retried, until none is left.
    run = pl_submit(job("allreduce_nofeed.py"), "--workers", 2, "--max-restarts", 1,
                    "--arg", "kill_worker=1", timeout=600)
    assert run.returncode == 1
    assert "allreduce training failed in all 2 attempts (--max-restarts 1)" in run.stderr
    assert "worker 1 killed by SIGKILL (attempt 2)" in run.stderr
    assert "restart 1/1 of the group: worker 1 killed by SIGKILL" in run.stdout


@pytest.mark.parametrize("job_file, args, error", [
    ("allreduce_nofeed.py", ["--arg", "fail_worker=1"], "ValueError: worker 1 cannot train: bad shard on purpose"),
    ("import_fails_on_workers.py", [], "No module named 'a_module_the_workers_do_not_have'"),
])
@pytest.mark.slow
def test_errors_in_the_jobs_own_code_are_not_retried(pl_submit, job_file, args, error):
    """Another attempt would fail the same way: the group stops at once, with the traceback (no
    restart: the summary counts none)."""
    run = pl_submit(job(job_file), "--workers", 2, *args, timeout=300)
    assert run.returncode == 1, run.output[-3000:]
    assert "not retried" in run.stderr and error in run.stderr and "Traceback" in run.stderr
    assert "restart 1/" not in run.stdout
    (app_dir,) = run.app_dirs()
    with open(os.path.join(app_dir, "summary.json")) as f:
        assert json.load(f)["restarts"]["total"] == 0


def test_more_workers_than_slots_fail_fast_with_the_arithmetic(pl_submit, no_java):
    """Refused before a SparkSession (or ZooKeeper) is started: no_java checks no JVM ran."""
    run = pl_submit(JOB, "--workers", 3, "--master", "local[2]", timeout=120, env=only_java(no_java))
    assert run.returncode == 2, run.output[-2000:]  # refused before starting anything
    assert "needs 3 concurrent tasks (3 workers), but --master local[2] runs 2 at once" in run.output


def test_a_ps_mode_job_file_runs_unchanged_in_allreduce_mode(pl_submit, tmp_path):
    """linear_fit.py is test_core_ps's job (ctx.strategy, ctx.keras, ctx.dataset, steps_per_epoch,
    steps_per_execution=10); here it runs on two allreduce workers with Keras 3."""
    out = tmp_path / "out.jsonl"
    run = pl_submit(job("linear_fit.py"), "--workers", 2, "--arg", f"out={out}", timeout=600)
    assert run.returncode == 0, run.output[-4000:]
    results = lines(out)  # every worker records; the copies must agree
    assert sorted(r["is_chief"] for r in results) == [False, True]
    assert results[0]["w"] == results[1]["w"] and results[0]["mode"] == "allreduce"
    for got, want in zip(results[0]["w"], [2.0, -3.0, 0.5, 1.5]):
        assert abs(got - want) < 0.05, results[0]
    assert abs(results[0]["b"] - 1.0) < 0.05 and results[0]["rows"] == 20000
    assert "running 1 step per execution" in open(run.app_dirs()[0] + "/nodes/logs/worker-0.log").read()
