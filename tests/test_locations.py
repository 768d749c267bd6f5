"""Locations given as URIs: refused before Spark starts when they cannot be served, and checkpoints
stored in S3 that survive their uploader being SIGKILLed (a real moto S3 server, real TF saves)."""
import signal
import subprocess
import sys
import time

import pytest
from conftest import PL_SUBMIT, job, run_saver
from s3server import MotoS3, with_env

SAVER = r"""
import os, sys, tensorflow as tf
from elearn.train.checkpoint import Checkpointer
from elearn.train.outputs import CheckpointStore, reach
store = CheckpointStore(reach(sys.argv[1], sys.argv[2]))
last = int(sys.argv[3]) or -1  # 0: until killed
table = tf.Variable(tf.zeros([4_000_000]))  # 16 MB: an upload takes long enough to be cut
ckpt = Checkpointer(store, {"table": table}, every_steps=1, max_to_keep=2, announce=False)
step = ckpt.step
while step != last:
    step += 1
    table.assign(tf.fill([4_000_000], float(step)))
    ckpt.save(step)
    store.flush()
    print("stored", step, flush=True)
"""


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = MotoS3(str(tmp_path_factory.mktemp("moto") / "moto.log")).start()
    restore = with_env(server.env())
    server.create_bucket("ckpt")
    yield server
    restore()
    server.stop()


def restored_step(uri, tmp_path):
    """The step of the latest checkpoint stored at ``uri``, read back whole by a fresh process."""
    import tensorflow as tf

    from elearn.train.outputs import CheckpointStore, reach

    fetched = CheckpointStore(reach(uri, str(tmp_path / "fresh"))).fetch_latest()
    assert fetched is not None
    table, step = tf.Variable(tf.zeros([4_000_000])), tf.Variable(0, dtype=tf.int64)
    tf.train.Checkpoint(table=table, elearn_step=step).restore(fetched).assert_existing_objects_matched()
    values = table.numpy()
    assert values.min() == values.max() == float(step.numpy())  # the whole table, of that step
    return int(step.numpy())


@pytest.mark.parametrize("delay", [0.0, 1.0])
def test_an_uploader_killed_mid_upload_leaves_the_last_stored_checkpoint_restorable(s3, tmp_path, delay):
    uri = f"s3://ckpt/killed-{str(delay).replace('.', '-')}"
    code, stored = run_saver([sys.executable, "-c", SAVER, uri, str(tmp_path / "staging"), "0"],
                             kill_after=2, delay=delay)
    assert code == -signal.SIGKILL, (code, stored)   # died of the kill, inside a later save
    assert stored[:2] == [1, 2], stored
    # Never older than the last checkpoint reported stored (2 or the one after, if it completed).
    step = restored_step(uri, tmp_path)
    assert step >= stored[-1] and step <= stored[-1] + 1, (step, stored)


def test_control_an_uploader_left_to_finish_restores_its_last_step(s3, tmp_path):
    """The same saver, not killed: it exits by itself after step 3, which is what is restored.
    With max_to_keep 2, steps 1 and 2 were stored and dropped on the way."""
    code, stored = run_saver([sys.executable, "-c", SAVER, "s3://ckpt/finished", str(tmp_path / "staging"), "3"])
    assert code == 0 and stored == [1, 2, 3], (code, stored)
    assert restored_step("s3://ckpt/finished", tmp_path) == 3


@pytest.mark.parametrize("flag, uri, message", [
    ("--checkpoint-dir", "hdfs://namenode:8020/ckpt", "libhdfs"),
    ("--model-dir", "s3://no-such-bucket-here/model", "does not exist"),
    ("--checkpoint-dir", "ftp://host/ckpt", "supported"),
])
def test_a_location_that_cannot_be_served_is_refused_before_spark_starts(s3, no_java, tmp_path, flag, uri, message):
    t0 = time.monotonic()
    out = subprocess.run(PL_SUBMIT + [job("linear_fit.py"), "--ps", "1", flag, uri], capture_output=True,
                         text=True, timeout=120, env=no_java, cwd=tmp_path)
    assert out.returncode in (1, 2), out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert flag in text and uri in text and message in text, text
    assert time.monotonic() - t0 < 60


def test_an_unreachable_s3_endpoint_names_the_setting_to_check(no_java, tmp_path):
    env = {**no_java, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "y", "AWS_REGION": "us-east-1"}
    out = subprocess.run(PL_SUBMIT + [job("linear_fit.py"), "--ps", "1", "--checkpoint-dir", "s3://b/ckpt"],
                         capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "AWS_ENDPOINT_URL" in text and "--checkpoint-dir s3://b/ckpt" in text, text
