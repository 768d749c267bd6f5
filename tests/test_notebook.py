"""elearn.submit inside a real Jupyter kernel (ipykernel through jupyter_client), as a notebook runs
it on the session the notebook already has: in PS mode and allreduce mode on features from the
user's temp view, then interrupted like a stopped cell. The cell shows elearn's lines and train's
own progress; the user's session, its cached data and its view outlive every run; nothing of
elearn's is left."""
import contextlib
import json
import os
import time
import uuid

import pyspark
import pytest

from conftest import JOBS, ROOT, assert_no_orphans, lines


@contextlib.contextmanager
def kernel(home, tag: str, cwd):
    """A real ipykernel with ``ELEARN_HOME=home``; yields ``(run, manager, client)``, where
    ``run(cell)`` executes a cell and returns its status and everything it showed."""
    from jupyter_client.manager import start_new_kernel

    env = {**os.environ, "ELEARN_HOME": str(home), "ELEARN_TEST_TAG": tag,
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    manager, client = start_new_kernel(kernel_name="python3", env=env, cwd=str(cwd))

    def run(cell, timeout=600):
        shown = []

        def collect(msg):
            if msg["msg_type"] == "stream":
                shown.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                shown.append("\n".join(msg["content"]["traceback"]))

        reply = client.execute_interactive(cell, timeout=timeout, output_hook=collect)
        return reply["content"]["status"], "".join(shown)

    try:
        yield run, manager, client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=False)

def reply_to(client, msg_id: str, timeout: float) -> dict:
    """The shell reply to ``msg_id``; on a timeout, an AssertionError that shows what the cell
    printed meanwhile (elearn's own lines say where it stood)."""
    import queue

    deadline = time.monotonic() + timeout
    while True:
        try:
            reply = client.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            shown = []
            with contextlib.suppress(queue.Empty):
                while True:
                    msg = client.get_iopub_msg(timeout=1)
                    if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                        shown.append(msg["content"]["text"])
            raise AssertionError(f"no reply within {timeout:.0f}s; the cell showed:\n" + "".join(shown)[-5000:]) from None
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply


SESSION = """
import sys
sys.path.insert(0, {jobs!r})
from pyspark.sql import SparkSession
from common import linear_frame
import elearn
spark = (SparkSession.builder.master("local[4]").appName("mine")
         .config("spark.pyspark.python", sys.executable).getOrCreate())
cached = spark.range(1000).cache()
print("CACHED", cached.count())
linear_frame(spark, rows=3000).createOrReplaceTempView("features_view")
"""

SUBMIT = """
result = elearn.submit({job!r}, ps={ps}, workers=2, args={{"view": "features_view", "out": {out!r}}})
print("STATUS", result.status, result.error)
print("ALIVE", spark.range(5).count(), cached.count(), spark.sparkContext.master)
"""

WAIT = """
elearn.submit({job!r}, ps=1, workers=1, args={{"started": {started!r}}})
"""

AFTER = """
print("ALIVE", spark.range(5).count(), cached.count(), spark.sparkContext.master)
"""


def test_submit_on_the_notebooks_own_session_in_both_modes_and_interrupted(tmp_path):
    tag = uuid.uuid4().hex
    out, started = tmp_path / "out.jsonl", tmp_path / "started.jsonl"
    with kernel(tmp_path, tag, tmp_path) as (run, manager, client):
        status, text = run(SESSION.format(jobs=JOBS))
        assert status == "ok" and "CACHED 1000" in text, text[-3000:]
        for ps in (1, 0):
            status, text = run(SUBMIT.format(job=os.path.join(JOBS, "view_features.py"), ps=ps, out=str(out)))
            assert status == "ok" and "STATUS succeeded None" in text, text[-3000:]
            assert "ALIVE 5 1000 local[4]" in text, text[-3000:]
            assert f"Spark {pyspark.__version__}" in text and "on local[4] (the session already running here; it stays running)" in text
            assert "summary: succeeded" in text and ": loss=" in text, text[-3000:]
        assert sorted(r["mode"] for r in lines(out)) == ["allreduce", "ps"]
        for record in lines(out):
            assert abs(record["w"][0] - 2.0) < 0.2, record
        # A stopped cell: the kernel is interrupted while train runs.
        msg_id = client.execute(WAIT.format(job=os.path.join(JOBS, "waits.py"), started=str(started)))
        deadline = time.monotonic() + 300
        while not lines(started):
            assert time.monotonic() < deadline, "train never started"
            time.sleep(0.2)
        manager.interrupt_kernel()
        reply = reply_to(client, msg_id, timeout=300)
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt", \
            reply["content"]
        status, text = run(AFTER)
        assert status == "ok" and "ALIVE 5 1000 local[4]" in text, text[-3000:]
        # Only the notebook's own processes are left: its kernel and its session's JVM.
        assert_no_orphans(tag, timeout=60, only=(b"elearn.runtime", b"ZooKeeperServerMain", b"moto"))
    assert_no_orphans(tag)


@pytest.mark.slow
def test_the_example_notebook_runs_cell_by_cell(tmp_path):
    """examples/notebook.ipynb as a user runs it: every code cell in order, in a real kernel started
    in examples/; it trains, then scores unseen rows close to the true weights."""
    tag = uuid.uuid4().hex
    with open(os.path.join(ROOT, "examples", "notebook.ipynb")) as f:
        cells = ["".join(c["source"]) for c in json.load(f)["cells"] if c["cell_type"] == "code"]
    shown = []
    with kernel(tmp_path, tag, os.path.join(ROOT, "examples")) as (run, _, _):
        for cell in cells:
            status, text = run(cell)
            shown.append(text)
            assert status == "ok", "".join(shown)[-3000:]
    text = "".join(shown)
    assert "status succeeded model " in text, text[-3000:]
    worst = float(text.rsplit("largest error against the true weights ", 1)[1].split()[0])
    assert "scored 500 rows" in text and worst < 0.1, text[-2000:]
    assert_no_orphans(tag)
