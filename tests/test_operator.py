"""What operators see and do: list/status/kill, --tensorboard, and node errors that say where to look."""
import os
import subprocess
import time
import urllib.request

import pytest

from conftest import PL_SUBMIT, ROOT, assert_no_orphans, finish, job, lines, start_pl_submit

pytestmark = pytest.mark.slow


def wait_for_record(run, path, timeout, failure):
    """Poll until the job wrote its first record to ``path``, failing if pl_submit exits first."""
    deadline = time.monotonic() + timeout
    while not lines(path):
        assert run.proc.poll() is None, run.proc.communicate()
        assert time.monotonic() < deadline, failure
        time.sleep(0.2)


def control(tmp_path, *args):
    env = {**os.environ, "ELEARN_HOME": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(PL_SUBMIT + list(args), env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("ps", [1, 0], ids=["ps-mode", "allreduce-mode"])
def test_status_list_kill_and_tensorboard(tmp_path, ps):
    started, marker = tmp_path / "started.jsonl", tmp_path / "marker.jsonl"
    run = start_pl_submit([job("waits.py"), "--ps", ps, "--workers", 1, "--app-name", "ops-test",
                           "--tensorboard", "--arg", f"started={started}",
                           "--arg", f"marker={marker}"], tmp_path)
    wait_for_record(run, started, 300, "train never started")

    listed = control(tmp_path, "list")
    assert "ops-test" in listed.stdout, listed.stderr

    status = control(tmp_path, "status", "ops-test")
    assert status.returncode == 0, status.stderr
    assert "application ops-test: running" in status.stdout
    for node in ("ps:0", "worker:0")[1 - ps:]:
        row = next(line for line in status.stdout.splitlines() if line.startswith(node))
        assert "running" in row and "127.0.0.1:" in row and "s ago" in row

    # TensorBoard answers while the application runs (the printed URL is checked at the end,
    # when the console output can be read; here its address comes from the running process).
    url = _tensorboard_url(run)
    assert url, "no TensorBoard process"
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.status == 200

    killed = control(tmp_path, "kill", "ops-test")
    assert killed.returncode == 0, killed.stderr
    assert "ops-test stopped" in killed.stdout
    finish(run, timeout=120)
    assert run.returncode != 0
    assert "killed on request" in run.stderr
    assert f"TensorBoard: {url}" in run.stdout
    assert len(lines(marker)) == 1
    assert_no_orphans(run.tag)
    assert not (tmp_path / "running" / "ops-test.json").exists()


def test_kill_during_pre_train_cancels_its_spark_jobs(tmp_path):
    """A kill does not wait for the features: pre_train's running Spark action is cancelled, as
    the driver's REST API shows while the application still runs (the job records it)."""
    from elearn.cluster.procs import free_port

    started, marker, trained, jobs = (tmp_path / f"{n}.jsonl" for n in ("started", "marker", "trained", "jobs"))
    ui = free_port()
    run = start_pl_submit([job("slow_pre_train.py"), "--ps", 1, "--workers", 1, "--app-name",
                           "kill-etl", "--arg", f"started={started}", "--arg", f"marker={marker}",
                           "--arg", f"trained={trained}", "--arg", f"jobs={jobs}", "--arg", f"ui={ui}",
                           "--conf", f"spark.ui.port={ui}", "--conf", "spark.port.maxRetries=0"], tmp_path)
    wait_for_record(run, started, 300, "pre_train never started")  # Spark's start: minutes on a loaded machine
    t0 = time.monotonic()
    killed = control(tmp_path, "kill", "kill-etl")
    assert killed.returncode == 0, killed.stderr
    finish(run, timeout=120)
    took = time.monotonic() - t0
    assert run.returncode != 0
    assert "killed on request during pre_train" in run.stderr, run.output[-3000:]
    (seen,) = lines(jobs)   # pre_train's action failed; the REST API showed its job cancelled
    assert seen["jobs"] and max(seen["jobs"], key=lambda j: j["id"])["status"] == "FAILED", seen
    assert not any(j["status"] == "RUNNING" for j in seen["jobs"]), seen
    assert took < 60  # the features alone would take 100 s
    assert len(lines(marker)) == 1 and not lines(trained)
    assert_no_orphans(run.tag)


def _tensorboard_url(run):
    for pid in _children_cmdlines(run):
        if "tensorboard.main" in pid:
            parts = pid.split()
            host = parts[parts.index("--host") + 1]
            port = parts[parts.index("--port") + 1]
            return f"http://{host}:{port}/"
    return None


def _children_cmdlines(run):
    from conftest import tagged_pids

    out = []
    for pid in tagged_pids(run.tag):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                out.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return out


def test_a_node_dying_before_it_serves_shows_its_log_tail_through_spark(local_spark, tmp_path):
    """A real TF node process that cannot start its server (its cluster spec is unusable): the
    error that reaches the driver through Spark names the node, its log, and the log's last lines."""
    from elearn.cluster.logtail import spark_error_message
    from elearn.cluster.procs import free_port
    from elearn.ps import PSBackend
    from elearn.ps.node import _serve_spec
    from elearn.runtime.node_task import NodeTask
    from elearn.driver.options import SubmitOptions
    from elearn.specs import NodeSpec

    node_dir = str(tmp_path / "nodes")
    opts = SubmitOptions()
    spec = NodeSpec(app_id="dies", zk="", credentials=None, node_dir=node_dir, same_host=True,
                    backend=PSBackend(1), register_timeout=opts.register_timeout,
                    feed_timeout=opts.feed_timeout, max_restarts=opts.max_restarts)

    def start_node(_):
        task = NodeTask(spec, "ps", 0)
        task.host, task.port = "127.0.0.1", free_port()
        _serve_spec(task, {"ps": ["127.0.0.1:not-a-port"]})
        yield "served"

    with pytest.raises(Exception) as failure:
        local_spark.sparkContext.parallelize([0], 1).mapPartitions(start_node).collect()
    message = spark_error_message(failure.value)
    log = os.path.join(node_dir, "logs", "ps-0.log")
    assert message.startswith("ClusterError: ps:0 on "), message
    assert "TF process killed by SIGABRT before serving" in message  # what TF does with that spec
    assert f"log {log}, last lines:" in message
    last = [ln for ln in open(log).read().splitlines() if ln.strip()][-1]
    assert f"  | {last}" in message.splitlines(), (last, message)
