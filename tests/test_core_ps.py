"""PS mode end to end: real Spark (local), real ZooKeeper, real TF server processes."""
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import assert_no_orphans, cmdline, environ, finish, job, lines, start_pl_submit, tagged_pids, tf_node

from elearn.cluster.procs import free_port
from elearn.cluster.zookeeper import EmbeddedZooKeeper, connect

TRUE_W = [2.0, -3.0, 0.5, 1.5]
TOL = 0.05  # the label noise is 0.01; 4 epochs of Adam land well inside this


@pytest.fixture(scope="module")
def external_zk(tmp_path_factory):
    with EmbeddedZooKeeper(str(tmp_path_factory.mktemp("zk"))) as zk:
        yield zk.hosts


def test_fit_learns_true_weights_exports_and_cleans_up(pl_submit, tmp_path, external_zk):
    out, marker = tmp_path / "out.jsonl", tmp_path / "marker.jsonl"
    run = pl_submit(job("linear_fit.py"), "--ps", 1, "--workers", 2, "--zk", f"{external_zk}/team-a",
                    "--app-name", "fit-test", "--arg", f"out={out}", "--arg", f"marker={marker}")
    assert run.returncode == 0, run.output
    (result,) = lines(out)
    assert result["rows"] == 20000 and result["mode"] == "ps"
    assert result["num_ps"] == 1 and result["num_workers"] == 2 and result["is_chief"]
    for got, want in zip(result["w"], TRUE_W):
        assert abs(got - want) < TOL, result
    assert abs(result["b"] - 1.0) < TOL
    assert len(lines(marker)) == 1
    # What the user saw, phase by phase (plain lines: stdout is not a terminal here).
    for phase in ("ZooKeeper: external ensemble", "nodes registered 3/3", "fed worker:0",
                  "cluster up: 1 ps, 2 workers", "training:", ": loss=",
                  "model exported to", "teardown: stopping the TF nodes", "teardown done in",
                  "summary: succeeded", "phases: start"):
        assert phase in run.stdout, (phase, run.stdout[-3000:])
    (fed,) = [ln for ln in run.stdout.splitlines() if "] fed worker:0" in ln]
    assert re.search(r"fed worker:0 [\d,]+ rows, [\d.]+ MB in [\d.]+s \([\d,]+ rows/s\)", fed), fed
    (app_dir,) = run.app_dirs()
    with open(os.path.join(app_dir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["status"] == "succeeded" and summary["rows"]["train"]["total"] == 20000
    assert sum(summary["rows"]["train"]["per_worker"]) == 20000
    assert len(summary["rows"]["train"]["per_worker"]) == 2
    assert set(summary["phases"]) >= {"start", "pre_train", "feed", "register", "train", "teardown"}
    assert all(v >= 0 for v in summary["phases"].values())
    per_epoch = sum(math.ceil(r / 128) for r in summary["rows"]["train"]["per_worker"])
    assert summary["steps"] == 4 * per_epoch and summary["metrics"]["loss"] < 0.01
    assert f"step {4 * per_epoch}: loss=" in run.stdout
    assert summary["restarts"] == {"total": 0, "by_cause": {}, "steps_lost": 0}
    assert os.path.isdir(summary["model_dir"])
    # The application lived under the chroot; its znodes are gone from the still running server.
    client = connect(external_zk)
    try:
        assert client.exists("/team-a/elearn") and not client.exists("/team-a/elearn/fit-test")
    finally:
        client.stop()
    # The exported model loads in plain TensorFlow and predicts.
    code = (
        "import numpy as np, tensorflow as tf, sys\n"
        f"m = tf.saved_model.load({os.path.join(app_dir, 'model')!r})\n"
        "f = m.signatures['serving_default']\n"
        "x = {f'x{i}': tf.constant([0.5, -0.5], tf.float32) for i in range(4)}\n"
        "y = list(f(**x).values())[0].numpy().ravel()\n"
        f"w = {TRUE_W!r}\n"
        "want = [sum(wi * v for wi in w) + 1.0 for v in (0.5, -0.5)]\n"
        "assert np.allclose(y, want, atol=0.1), (y, want)\n"
        "print('PREDICTED', y)\n")
    check = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert "PREDICTED" in check.stdout, check.stderr[-2000:]


def assert_znodes_gone(zk_hosts: str, app_id: str) -> None:
    client = connect(zk_hosts)
    try:
        assert client.exists("/elearn") and not client.exists(f"/elearn/{app_id}")
    finally:
        client.stop()


@pytest.mark.slow
def test_train_raising_fails_with_traceback_and_cleans_up(pl_submit, tmp_path, external_zk):
    marker = tmp_path / "marker.jsonl"
    run = pl_submit(job("raises.py"), "--ps", 1, "--workers", 1, "--arg", f"marker={marker}",
                    "--zk", external_zk, "--app-name", "raises-test")
    assert run.returncode != 0
    assert "boom from train" in run.stderr
    assert "Traceback" in run.stderr and "raises.py" in run.stderr
    assert len(lines(marker)) == 1
    assert_znodes_gone(external_zk, "raises-test")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_everything_and_runs_shutdown_once(tmp_path, sig, external_zk):
    started, marker = tmp_path / "started.jsonl", tmp_path / "marker.jsonl"
    app_id = f"signal-{int(sig)}"
    run = start_pl_submit([job("waits.py"), "--ps", 1, "--workers", 1, "--zk", external_zk,
                           "--app-name", app_id,
                           "--arg", f"started={started}", "--arg", f"marker={marker}"], tmp_path)
    deadline = time.monotonic() + 240
    while not lines(started):
        assert run.proc.poll() is None, run.proc.communicate()
        assert time.monotonic() < deadline, "train never started"
        time.sleep(0.2)
    os.kill(run.proc.pid, sig)
    finish(run, timeout=90)
    assert run.returncode != 0
    assert "interrupted" in run.stderr
    assert len(lines(marker)) == 1
    assert_no_orphans(run.tag)
    assert_znodes_gone(external_zk, app_id)
    # Torn down, then summarised like any other ending.
    assert "teardown done in" in run.stdout and "summary: failed" in run.stdout
    (app_dir,) = run.app_dirs()
    with open(os.path.join(app_dir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["error"] == "interrupted" and "teardown" in summary["phases"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_lost_in_a_finalizer_is_raised_by_the_drivers_next_wait(tmp_path, monkeypatch):
    """Python drops an exception raised inside a ``__del__`` or a weakref callback (py4j frees its
    Java objects in such callbacks, on whichever thread collects them). A Ctrl-C whose
    KeyboardInterrupt lands there must still stop the run: the driver's waits raise it again."""
    from elearn.driver.app import Application
    from elearn.driver.options import SubmitOptions
    from elearn.submit import backend_for

    monkeypatch.setenv("ELEARN_HOME", str(tmp_path))
    opts = SubmitOptions.from_kwargs(ps=1, workers=1)
    app = Application(opts, backend_for(opts))
    before = signal.getsignal(signal.SIGINT)

    class Freed:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)  # its handler runs here; Python drops the raise

    with app.interrupts:
        app.check_killed()  # nothing pressed yet
        Freed()
        lost = True  # reached: the KeyboardInterrupt was dropped
        with pytest.raises(KeyboardInterrupt):
            app.check_killed()
    assert lost and signal.getsignal(signal.SIGINT) is before


BAD_INPUT = [
    (["missing.py", "--ps", 1, "--workers", 1], "job file not found"),
    ([job("no_job.py"), "--ps", 1, "--workers", 1], "defines no subclass of elearn.SparkTFJob"),
    ([job("two_jobs.py"), "--ps", 1, "--workers", 1], "choose one with --job-class"),
    ([job("returns_list.py"), "--ps", 1, "--workers", 1], "pre_train must return a Spark DataFrame"),
    ([job("linear_fit.py"), "--ps", 1, "--workers", 0], "--workers must be at least 1"),
    ([job("linear_fit.py"), "--ps", 1, "--workers", -2], "--workers must be at least 1"),
    ([job("linear_fit.py"), "--ps", -1, "--workers", 1], "--ps must be 0"),
    ([job("map_column.py"), "--ps", 1, "--workers", 1], "attrs (map<string,bigint>"),
    ([job("linear_fit.py"), "--ps", 2, "--workers", 2, "--master", "local[2]"],
     "needs 4 concurrent tasks (2 ps + 2 workers), but --master local[2] runs 2 at once "
     "(2 cores / spark.task.cpus 1): worker:0, worker:1 would never start"),
]


@pytest.mark.parametrize("args,message", BAD_INPUT, ids=[f"{m[:28]}{a[-1]}" for a, m in BAD_INPUT])
def test_bad_input_fails_fast_with_clear_message(pl_submit, args, message):
    """Refused by a check, not found out by a wait: with a register timeout of 600 s, failing
    within 300 s (start-up on a loaded machine included) means nothing waited for the nodes."""
    t0 = time.monotonic()
    run = pl_submit(*args, "--register-timeout", 600, timeout=400)
    assert run.returncode != 0
    assert message in run.stderr, run.stderr[-3000:]
    assert time.monotonic() - t0 < 300


def test_unreachable_zookeeper_fails_fast_naming_the_address(pl_submit):
    """pl_submit names the address (a hang would run into the run's timeout); the connection
    attempt behind it gives up after its 15 s, timed here without Spark's start beside it."""
    from elearn.errors import ClusterError

    port = free_port()
    run = pl_submit(job("linear_fit.py"), "--ps", 1, "--workers", 1, "--zk", f"127.0.0.1:{port}",
                    timeout=240)
    assert run.returncode != 0
    assert f"cannot reach ZooKeeper at '127.0.0.1:{port}'" in run.stderr
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match=f"cannot reach ZooKeeper at '127.0.0.1:{port}'"):
        connect(f"127.0.0.1:{port}", timeout=15)
    assert 15 <= time.monotonic() - t0 < 25


@pytest.mark.slow
def test_long_feature_engineering_is_not_mistaken_for_missing_nodes(pl_submit, tmp_path):
    """Worker tasks start only after the features are computed; that wait is shown, not timed out."""
    out = tmp_path / "out.jsonl"
    run = pl_submit(job("slow_features.py"), "--ps", 1, "--workers", 1, "--register-timeout", 8,
                    "--arg", f"out={out}")
    assert run.returncode == 0, run.output[-3000:]
    assert lines(out) == [{"rows": 400}]
    assert "preparing the worker feed: stage" in run.stdout
    # The features (10 s of work per core) kept the nodes from registering for longer than the
    # 8 s register timeout: the wait outlasted it, and was not taken for missing nodes.
    (app_dir,) = run.app_dirs()
    with open(os.path.join(app_dir, "summary.json")) as f:
        spent = json.load(f)["phases"]
    assert spent["register"] > 8, spent


def compute_threads(pid: int) -> int:
    """Threads of ``pid`` named tf_Compute: TensorFlow's inter-op pool, as the process built it."""
    count = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                count += f.read().strip() == "tf_Compute"
        except OSError:
            continue
    return count


@pytest.mark.slow
def test_tf_thread_pools_are_sized_to_the_cores_spark_gave_each_task(tmp_path):
    # 3 cores a task: neither this host's 2 (TensorFlow's default) nor the driver's 1.
    started = tmp_path / "started.jsonl"
    run = start_pl_submit([job("waits.py"), "--master", "local[6]", "--conf", "spark.task.cpus=3",
                           "--ps", 1, "--workers", 1, "--arg", f"started={started}"], tmp_path)
    try:
        deadline = time.monotonic() + 240
        while not lines(started):
            assert run.proc.poll() is None, run.proc.communicate()
            assert time.monotonic() < deadline, "train never started"
            time.sleep(0.2)
        for role in ("ps", "worker"):
            pid = tf_node(run.tag, role, 0)
            assert pid is not None, f"no {role} process"
            env = environ(pid).split("\0")
            assert "TF_NUM_INTRAOP_THREADS=3" in env and "TF_NUM_INTEROP_THREADS=3" in env, role
            # What TensorFlow built: two inter-op pools (the server's, and the coordinator's remote
            # context's) and 4 more tf_Compute threads; measured 8 with TF's default on this 2-core
            # host, 10 with 3 threads a pool, 14 with 5.
            assert compute_threads(pid) == 2 * 3 + 4, role
        (coordinator,) = [p for p in tagged_pids(run.tag) if "elearn.train.trainer" in cmdline(p)]
        assert "TF_NUM_INTRAOP_THREADS=1" in environ(coordinator).split("\0")   # spark.driver.cores
    finally:
        os.kill(run.proc.pid, signal.SIGINT)
        finish(run, timeout=90)
    assert_no_orphans(run.tag)
