"""A parameter server's memory: a table costs its own bytes there, not the transients that made it."""
import os
import subprocess
import sys

from conftest import ROOT, job, lines

TABLE_ROWS, DIM = 2_000_000, 16   # 122 MiB of float32

# Two TF servers as PS-mode nodes start them (``python -m elearn.runtime.tf_server``, the spec on
# stdin, the parameter server with ``elearn.ps.node``'s environment), and a coordinator that creates
# one table the way a Keras initializer does (a uniform draw, scaled and shifted: two transients of
# the table's size). Prints the parameter server's RSS growth in bytes.
SCRIPT = """
import json, os, subprocess, sys
from elearn.cluster.procs import free_port
from elearn.ps.node import server_env

rows, dim = int(sys.argv[1]), int(sys.argv[2])
spec = {"ps": [f"localhost:{free_port()}"], "worker": [f"localhost:{free_port()}"],
        "chief": [f"localhost:{free_port()}"]}
servers = {}
for role in ("ps", "worker"):
    env = {**os.environ, **server_env(role, 0, os.environ)}
    servers[role] = subprocess.Popen([sys.executable, "-m", "elearn.runtime.tf_server"], env=env,
                                     stdin=subprocess.PIPE)
    servers[role].stdin.write((json.dumps({"cluster": spec}) + "\\n").encode())
    servers[role].stdin.flush()

def rss():
    with open(f"/proc/{servers['ps'].pid}/status") as f:
        return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmRSS:"))

try:
    import tensorflow as tf
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(spec), task_type="chief", task_id=0, rpc_layer="grpc")
    strategy = tf.distribute.ParameterServerStrategy(resolver)
    with strategy.scope():
        small = tf.Variable(lambda: tf.random.uniform([1000, dim]))  # connected, kernels loaded
    before = rss()
    with strategy.scope():
        table = tf.Variable(lambda: tf.random.uniform([rows, dim], -0.05, 0.05))
    float(table[0, 0])  # the table exists on the parameter server
    print("GROWTH", rss() - before)
finally:
    for proc in servers.values():
        proc.kill()
"""


def test_a_parameter_server_keeps_a_new_table_and_gives_back_its_transients():
    """With oneDNN's allocator (TensorFlow's default on x86) the parameter server kept three times
    the table (it reuses what it frees, never returns it); elearn starts it without."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(TABLE_ROWS), str(DIM)], capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 0 and "GROWTH" in out.stdout, out.stderr[-3000:]
    table = TABLE_ROWS * DIM * 4
    growth = int(out.stdout.split("GROWTH")[1].split()[0])
    assert 0.9 * table < growth < 1.5 * table, f"the parameter server grew {growth / table:.2f}x the table"


def test_a_tf_keras_optimizers_slots_are_built_on_the_parameter_server_not_the_coordinator(pl_submit, tmp_path):
    """tf_keras's current Adagrad computes each accumulator's full-size initial value where it is
    built; fit would build it on the coordinator (a transient of three times the slot there). elearn
    builds it on a parameter server before fit starts."""
    out = tmp_path / "out.jsonl"
    run = pl_submit(job("slot_memory.py"), "--ps", 1, "--workers", 1, "--arg", f"rows={TABLE_ROWS}",
                    "--arg", f"out={out}", "--checkpoint-every", "off", timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (result,) = lines(out)
    assert result["slots"] and all("/job:ps/" in d for d in result["slots"]), result
    table = TABLE_ROWS * DIM * 4
    assert result["growth"] < 0.5 * table, f"the coordinator's peak grew {result['growth'] / table:.2f}x the table"
