"""PS-mode fault injection on real processes (SIGKILL, not polite exits). A PS lost and a driver
killed, then the same command run again, are tested where they are hardest, on the simulated
cluster with checkpoints in S3 (test_multihost.py)."""
import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import (assert_no_orphans, cmdline, finish, job, lines, parent_of, start_pl_submit, tagged_pids,
                      tf_node, timed_out)

from elearn.cluster.waits import wait_until
from elearn.cluster.zookeeper import EmbeddedZooKeeper, connect

TRUE_W = [2.0, -3.0, 0.5, 1.5]
TOL = 0.1


def start_job(tmp_path, *extra, app_name=None):
    files = {k: tmp_path / f"{k}.jsonl" for k in ("progress", "out", "marker")}
    args = [job("recover_ctl.py"), "--ps", 1, "--workers", 2,
            *[a for k, p in files.items() for a in ("--arg", f"{k}={p}")], *extra]
    if app_name:
        args += ["--app-name", app_name]
    return start_pl_submit(args, tmp_path), files


def steps(files):
    return [r["step"] for r in lines(files["progress"]) if "step" in r]


def starts(files):
    return [r for r in lines(files["progress"]) if "start" in r]


def assert_learned(files):
    (out,) = lines(files["out"])
    for got, want in zip(out["w"], TRUE_W):
        assert abs(got - want) < TOL, out
    assert abs(out["b"] - 1.0) < TOL, out


def assert_never_behind_checkpoint(files):
    """After each restart train starts from the last checkpoint saved, never earlier."""
    saved = 0
    for r in lines(files["progress"]):
        if "start" in r:
            assert r["start"] == saved, (r, saved)
        elif r.get("saved"):
            saved = r["step"]


def app_zk(tmp_path):
    """A ZooKeeper client on the running application's server (found like pl_submit status does)."""
    (entry,) = [json.loads(p.read_text()) for p in (tmp_path / "running").glob("*.json")]
    return entry["app_id"], connect(entry["zk"])


def session_of(client, app_id, node):
    stat = client.exists(f"/elearn/{app_id}/{node.replace(':', '/')}")
    return stat.ephemeralOwner if stat else None


def events_of(app_dir):
    return lines(os.path.join(app_dir, "events.jsonl"))


@pytest.mark.slow
def test_worker_tf_process_zookeeper_and_a_lost_session_recover_without_restarting_train(tmp_path):
    """None of these restarts train: the worker's daemon restarts its TF process in place (TF
    retries the lost steps); the embedded ZooKeeper is restarted; a daemon frozen past its session
    timeout re-registers with a new session once it runs again."""
    stop = tmp_path / "stop"
    run, files = start_job(tmp_path, "--arg", "steps=100000", "--arg", f"stop={stop}")
    wait_until(lambda: any(s >= 60 for s in steps(files)), 300, on_timeout=timed_out("training to progress"))
    app_id, client = app_zk(tmp_path)
    app_dir = os.path.join(tmp_path, "apps", app_id)
    try:
        # 1. A worker's TF process: restarted in place at the same address.
        pid = wait_until(lambda: tf_node(run.tag, "worker", 0),
                         30, on_timeout=timed_out("worker 0's TF process"))
        os.kill(pid, signal.SIGKILL)
        restarted = wait_until(lambda: tf_node(run.tag, "worker", 0) not in (None, pid)
                             and json.loads(client.get(f"/elearn/{app_id}/worker/0")[0])
                             .get("restarts") == 1, 60, on_timeout=timed_out("worker 0 restarted in place"))
        assert restarted
        mark = max(steps(files))
        wait_until(lambda: max(steps(files)) >= mark + 40, 120, on_timeout=timed_out("training to go on"))
        # 2. The embedded ZooKeeper JVM: restarted on the same port and data.
        zk = wait_until(lambda: [p for p in tagged_pids(run.tag) if "ZooKeeperServerMain" in cmdline(p)],
                        30, on_timeout=timed_out("the ZooKeeper JVM"))
        os.kill(zk[0], signal.SIGKILL)
        wait_until(lambda: any(e["event"] == "zookeeper_restart" for e in events_of(app_dir)),
                   60, on_timeout=timed_out("ZooKeeper to be restarted"))
        client.stop()
        _, client = app_zk(tmp_path)
        # 3. Worker 1's daemon frozen longer than its 15 s session: the server expires the session
        # and drops the node's ephemeral znode; thawed, the daemon registers again.
        session = wait_until(lambda: session_of(client, app_id, "worker:1"),
                             60, on_timeout=timed_out("worker 1's znode"))
        daemon = parent_of(wait_until(lambda: tf_node(run.tag, "worker", 1),
                                      30, on_timeout=timed_out("worker 1's TF")))
        os.kill(daemon, signal.SIGSTOP)
        try:
            wait_until(lambda: session_of(client, app_id, "worker:1") is None,
                       60, on_timeout=timed_out("the session to expire"))
        finally:
            os.kill(daemon, signal.SIGCONT)
        again = wait_until(lambda: session_of(client, app_id, "worker:1"),
                           60, on_timeout=timed_out("worker 1 to re-register"))
        assert again != session
        mark = max(steps(files))
        wait_until(lambda: max(steps(files)) >= mark + 40, 120, on_timeout=timed_out("training to go on"))
    finally:
        client.stop()
        stop.touch()
    finish(run, timeout=300)
    assert run.returncode == 0, run.output[-4000:]
    assert len(starts(files)) == 1  # ParameterServerStrategy carried on: train never restarted
    assert "worker:0's TF process died (exit code -9); its node task restarted it in place" in run.stdout
    assert "embedded ZooKeeper died and was restarted" in run.stdout
    assert "worker:1 left ZooKeeper" in run.stdout and "worker:1 registered again" in run.stdout
    kinds = [e["event"] for e in events_of(app_dir)]
    assert {"restart", "zookeeper_restart", "session_lost", "reregistered"} <= set(kinds), kinds
    assert all("time" in e for e in events_of(app_dir))
    with open(os.path.join(app_dir, "summary.json")) as f:
        restarts = json.load(f)["restarts"]
    assert restarts["by_cause"] == {"worker:0 in place": 1, "zookeeper": 1}, restarts
    assert restarts["total"] == 2
    assert_learned(files)
    assert_no_orphans(run.tag)
    # The custom loop's tf.Module was exported and predicts in plain TensorFlow.
    code = (f"import tensorflow as tf\nm = tf.saved_model.load({os.path.join(app_dir, 'model')!r})\n"
            "print('Y', float(m(tf.constant([[1.0, 1.0, 1.0, 1.0]]))[0]))\n")
    check = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert "Y" in check.stdout, check.stderr[-2000:]
    assert abs(float(check.stdout.split("Y")[1]) - (sum(TRUE_W) + 1.0)) < 0.2


@pytest.mark.slow
def test_worker_daemon_killed_spark_reruns_task_and_cluster_reforms(tmp_path):
    run, files = start_job(tmp_path)
    wait_until(lambda: any(r.get("saved") and r["step"] >= 80 for r in lines(files["progress"])),
               300, on_timeout=timed_out("a checkpoint at step 80"))
    node = wait_until(lambda: tf_node(run.tag, "worker", 1), 30, on_timeout=timed_out("worker 1's TF process"))
    daemon = parent_of(node)
    assert "python" in cmdline(daemon)
    os.kill(daemon, signal.SIGKILL)
    finish(run, timeout=400)
    assert run.returncode == 0, run.output[-4000:]
    assert "worker:1 rerun by Spark" in run.stdout
    assert len(starts(files)) == 2 and starts(files)[1]["start"] >= 80
    assert_never_behind_checkpoint(files)
    assert_learned(files)
    assert_no_orphans(run.tag)


@pytest.mark.slow
def test_node_that_keeps_crashing_exhausts_restarts_with_its_log(tmp_path):
    run, files = start_job(tmp_path, "--max-restarts", 1, "--arg", "pause=1.0", "--arg", "steps=400")
    wait_until(lambda: any(s >= 20 for s in steps(files)), 300, on_timeout=timed_out("training to progress"))
    pid = wait_until(lambda: tf_node(run.tag, "ps", 0), 60, on_timeout=timed_out("the PS TF process"))
    os.kill(pid, signal.SIGKILL)
    # The first loss is recovered (train restarts); the second exhausts --max-restarts 1.
    wait_until(lambda: len(starts(files)) == 2 or run.proc.poll() is not None,
               300, on_timeout=timed_out("train to restart"))
    assert run.proc.poll() is None, run.proc.communicate()
    pid = wait_until(lambda: tf_node(run.tag, "ps", 0), 60, on_timeout=timed_out("the restarted PS TF process"))
    os.kill(pid, signal.SIGKILL)
    finish(run, timeout=300)
    assert run.returncode != 0
    assert "ps:0" in run.stderr and ("giving up" in run.stderr or "kept failing" in run.stderr)
    assert "elearn node ps:0 serving" in run.stderr  # the tail of the node's log
    assert_no_orphans(run.tag)


def test_other_credentials_cannot_delete_an_applications_znodes(tmp_path):
    from kazoo.exceptions import NoAuthError

    from elearn.mpi.group import GroupRestarts
    from elearn.cluster.registry import AppRegistry, Credentials

    with EmbeddedZooKeeper(str(tmp_path / "zk")) as zk:
        auth = Credentials.of_application(str(tmp_path / "secret-a"))
        owner = connect(zk.hosts, auth)
        AppRegistry(owner, "app-a", auth).create()
        # A node registers the way a node task does: its own session, the shipped credentials.
        node = connect(zk.hosts, auth)
        AppRegistry(node, "app-a", auth).register("ps", 0, {"host": "h", "port": 1})
        GroupRestarts(AppRegistry(node, "app-a", auth)).request(0, 1, "killed by SIGKILL")
        other_auth = Credentials.of_application(str(tmp_path / "secret-b"))
        intruder = connect(zk.hosts, other_auth)
        try:
            for path in ("/elearn/app-a/ps/0", "/elearn/app-a/allreduce/restart-0"):
                with pytest.raises(NoAuthError):
                    intruder.delete(path)
                with pytest.raises(NoAuthError):
                    intruder.set(path, b"{}")
            with pytest.raises(NoAuthError):
                intruder.delete("/elearn/app-a", recursive=True)
            with pytest.raises(NoAuthError):
                intruder.set("/elearn/app-a/state", b"{}")
            with pytest.raises(NoAuthError):  # no one else can end (or fake) an allreduce attempt
                GroupRestarts(AppRegistry(intruder, "app-a")).request(1, 0, "forged")
            assert json.loads(intruder.get("/elearn/app-a/ps/0")[0]) == {"host": "h", "port": 1}
            assert GroupRestarts(AppRegistry(intruder, "app-a")).all()[0]["reason"] == "worker 1 killed by SIGKILL"
            node.stop()
            AppRegistry(owner, "app-a", auth).delete()
            assert not owner.exists("/elearn/app-a")
        finally:
            intruder.stop()
            owner.stop()
