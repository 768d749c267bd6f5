"""Locations given as URIs: refused before Spark starts when they cannot be served, and checkpoints
stored in S3 that survive their uploader being SIGKILLed (a real moto S3 server, real TF saves)."""
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
from conftest import PL_SUBMIT, job
from s3server import MotoS3, with_env

SAVER = r"""
import os, sys, tensorflow as tf
from elearn.checkpoint import Checkpointer
from elearn.runtime.outputs import CheckpointStore, reach
store = CheckpointStore(reach(sys.argv[1], sys.argv[2]))
table = tf.Variable(tf.zeros([4_000_000]))  # 16 MB: an upload takes long enough to be cut
ckpt = Checkpointer(store, {"table": table}, every_steps=1, max_to_keep=2, announce=False)
step = ckpt.step
while True:
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


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.5])
def test_an_uploader_killed_mid_upload_leaves_the_previous_checkpoint_restorable(s3, tmp_path, delay):
    import tensorflow as tf

    from elearn.runtime.outputs import CheckpointStore, reach

    uri = f"s3://ckpt/killed-{str(delay).replace('.', '-')}"
    proc = subprocess.Popen([sys.executable, "-c", SAVER, uri, str(tmp_path / "staging")],
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("stored 1")   # one checkpoint is complete in S3
        time.sleep(delay)  # the fault's timing: somewhere in a later save or its upload
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    fetched = CheckpointStore(reach(uri, str(tmp_path / "fresh"))).fetch_latest()
    assert fetched is not None
    table, step = tf.Variable(tf.zeros([4_000_000])), tf.Variable(0, dtype=tf.int64)
    tf.train.Checkpoint(table=table, elearn_step=step).restore(fetched).assert_existing_objects_matched()
    values = table.numpy()
    assert int(step.numpy()) >= 1 and values.min() == values.max() == float(step.numpy())


@pytest.fixture
def no_java(tmp_path):
    """A ``java`` on PATH that records being run: proof that nothing started a JVM."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "java-was-run"
    fake = bin_dir / "java"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", ELEARN_HOME=str(tmp_path / "home"))
    yield env
    assert not marker.exists(), "a JVM was started"


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
