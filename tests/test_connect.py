"""elearn over Spark Connect: a real Connect server started from pyspark's jars, the client in
another process. PS mode through ``elearn.submit(..., spark=<a Connect session>)``, allreduce mode
through ``pl_submit --remote`` with a worker SIGKILLed mid-training. Nothing of elearn's may be left
on the server's side after either, and the session stays usable."""
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, assert_no_orphans, job, lines
from connect_server import ConnectServer, missing

pytestmark = [pytest.mark.timeout(1500), pytest.mark.skipif(missing() is not None, reason=str(missing()))]

QUICKSTART = os.path.join(ROOT, "examples", "quickstart", "linear_job.py")
TRUE_W, TRUE_B = [2.0, -3.0, 0.5], 1.0  # the quickstart's data


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ConnectServer(str(tmp_path_factory.mktemp("connect") / "server.log")).start()
    yield srv
    srv.stop()
    assert_no_orphans(srv.tag, timeout=60)  # the server and everything it started


def assert_server_quiet(server):
    """Nothing of elearn's is left on the server's side; the server itself stays."""
    assert_no_orphans(server.tag, timeout=60, only=(b"elearn.runtime",))


CLIENT = """
import json, sys
from pyspark.sql import SparkSession
import elearn

spark = SparkSession.builder.remote({url!r}).getOrCreate()
mine = spark.range(100).cache()
mine.count()
spark.range(10).createOrReplaceTempView("users_view")
result = elearn.submit({job!r}, spark=spark, ps=1, workers=2, app_name="connect-ps")
after = [spark.range(5).count(), mine.count(), spark.sql("select count(*) from users_view").collect()[0][0]]
print(json.dumps({{"status": result.status, "error": result.error, "after": after}}))
"""


def test_the_quickstart_on_a_spark_connect_session_trains_and_leaves_the_session_running(server, tmp_path):
    env = {**os.environ, "ELEARN_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", CLIENT.format(url=server.url, job=QUICKSTART)],
                          capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded", summary
    assert summary["after"] == [5, 100, 10]  # the session, its cached data and its view still there
    # The chief's print, relayed to the client's console: "learned weights [..] bias b".
    learned = re.search(r"learned weights \[([^\]]*)\] bias (\S+)", proc.stdout)
    assert learned, proc.stdout[-3000:]
    weights = [float(w) for w in learned.group(1).split(",")] + [float(learned.group(2))]
    for got, want in zip(weights, TRUE_W + [TRUE_B], strict=True):
        assert abs(got - want) < 0.1, weights
    assert "on local[4] (the session already running here; it stays running)" in proc.stdout
    assert_server_quiet(server)


def test_allreduce_over_pl_submit_remote_recovers_a_killed_worker(server, pl_submit, tmp_path):
    out, epochs, marker = tmp_path / "out.jsonl", tmp_path / "epochs.jsonl", tmp_path / "killed"
    run = pl_submit(job("allreduce_classifier.py"), "--workers", 2, "--remote", server.url,
                    "--arg", f"out={out}", "--arg", f"epochs_file={epochs}", "--arg", "kill_at=1:10",
                    "--arg", f"kill_marker={marker}", "--arg", "rows=4001", timeout=900)
    assert run.returncode == 0, run.output[-4000:]
    assert marker.exists() and "restart 1/3 of the group: worker 1 killed by SIGKILL" in run.stdout
    (result,) = lines(out)
    assert result["accuracy"] >= 0.93 and result["keras"] == "keras", result
    assert [e["epoch"] for e in lines(epochs)] == [0, 1, 1, 2, 3]
    assert_server_quiet(server)


def test_keyboard_interrupt_on_a_connect_session_stops_the_application_only(server, tmp_path):
    """Ctrl-C in the client (a KeyboardInterrupt in the thread that called submit) stops elearn's
    jobs on the server within 30 s, and nothing else: the session runs a job right after.

    The client sets Python's own SIGINT handler: a process started in the background of a
    non-interactive shell inherits SIGINT ignored, and then ``interrupt_main`` does nothing."""
    started = tmp_path / "started.jsonl"
    script = textwrap.dedent(f"""
        import _thread, json, os, signal, threading, time
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from pyspark.sql import SparkSession
        import elearn

        spark = SparkSession.builder.remote({server.url!r}).getOrCreate()
        started = {str(started)!r}
        interrupted_at = []

        def interrupt_once_training():
            while not os.path.exists(started):
                time.sleep(0.2)
            interrupted_at.append(time.monotonic())
            _thread.interrupt_main()

        threading.Thread(target=interrupt_once_training, daemon=True).start()
        try:
            elearn.submit({job("waits.py")!r}, spark=spark, ps=1, workers=1, args={{"started": started}})
        except KeyboardInterrupt:
            took = time.monotonic() - interrupted_at[0]
            print(json.dumps({{"interrupted": True, "took": took, "after": spark.range(7).count()}}))
    """)
    env = {**os.environ, "ELEARN_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert '"interrupted"' in proc.stdout, proc.stdout[-3000:]  # submit ended by the interrupt
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["interrupted"] and got["after"] == 7, got
    assert got["took"] < 30, got   # the interrupt ended submit; the job alone runs 300 s
    assert_server_quiet(server)
