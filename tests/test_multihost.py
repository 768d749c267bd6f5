"""elearn on a cluster of hosts that share no disk: the simulated cluster of tests/simcluster.py (3
worker hosts, each its own network namespace, address, hostname and private /tmp, ~/.elearn and
~/.cache, with a Spark standalone Worker; pl_submit on an edge host of its own). Real Spark, real
ZooKeeper, real TF processes, a real S3 server (moto) on the edge, real SIGKILLs and a real cut of
a host's network. Default flags unless a test says otherwise.

Every process on every host carries this module's tag; after each test nothing of the application
may be left on any host (``cluster.wait_quiet``), and the namespaces are gone after the module.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import textwrap
import time
import uuid

import pyspark
import pytest
from cluster_runs import (S3OnEdge, environ_has, lines_on, node_hosts, start_on, submit_on, tf_processes,
                          zookeeper_on, zookeeper_zxid)
from conftest import ROOT, job, lines, timed_out
from simcluster import cluster_fixture
from test_fm_job import TRAINING as FM_TRAINING
from test_fm_job import check_evaluation

from elearn.cluster.peers import PEER_TIMEOUT
from elearn.cluster.waits import wait_until

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(1500)]

TRUE_W = [2.0, -3.0, 0.5, 1.5]
QUICKSTART_W, QUICKSTART_B = [2.0, -3.0, 0.5], 1.0  # examples/quickstart's data
QUICKSTART = os.path.join(ROOT, "examples", "quickstart", "linear_job.py")
SAMPLE = os.path.join(os.path.dirname(pyspark.__file__), "data", "mllib", "als", "sample_movielens_ratings.txt")


cluster = cluster_fixture(hosts=3, shared=True, cores=2, memory="3g", env={"ELEARN_TEST_TAG": uuid.uuid4().hex})


SERVICES: set = set()   # processes that outlive one test on purpose (the S3 server)


@pytest.fixture(scope="module")
def s3(cluster, tmp_path_factory):
    server = S3OnEdge(cluster).start(str(tmp_path_factory.mktemp("s3") / "moto.log"))
    pid = server.proc.pid
    SERVICES.add(pid)
    server.make_bucket("elearn")
    yield server
    server.stop()
    SERVICES.discard(pid)


@pytest.fixture(autouse=True)
def quiet(cluster):
    """Nothing of a test's application outlives it, on any host."""
    yield
    cluster.wait_quiet(timeout=90, services=SERVICES)


def master(cluster):
    return ["--master", cluster.master_url, "--register-timeout", 600]


def short_register_timeout(cluster, seconds: float) -> list:
    """``--register-timeout seconds`` for a run that tests what the nodes do within it, once every
    host's executor is up: Spark schedules nothing before all the cluster's cores registered
    (``minRegisteredResourcesRatio`` of ``spark.cores.max``), so executor JVMs starting slowly on a
    loaded machine do not count against it (they took over 10 s here at times)."""
    cores = cluster.cores * len(cluster.hosts)
    return ["--master", cluster.master_url, "--register-timeout", seconds,
            "--conf", f"spark.cores.max={cores}", "--conf", "spark.scheduler.minRegisteredResourcesRatio=1.0",
            "--conf", "spark.scheduler.maxRegisteredResourcesWaitingTime=300s"]


def serve(path, inputs: dict):
    """The SavedModel at ``path`` called through its serving signature, in plain TensorFlow, on
    ``{input name: 1-D float array}``; its one output as a NumPy array."""
    import tensorflow as tf

    fn = tf.saved_model.load(path).signatures["serving_default"]
    (out,) = fn(**{k: tf.constant(v, tf.float32) for k, v in inputs.items()}).values()
    return out.numpy()


def assert_linear(path, weights, bias):
    """The exported regression predicts ``x . weights + bias``."""
    import numpy as np

    x = np.random.default_rng(3).uniform(0, 1, (64, len(weights))).astype(np.float32)
    got = serve(path, {f"x{i}": x[:, i] for i in range(len(weights))}).ravel()
    np.testing.assert_allclose(got, x @ np.array(weights, np.float32) + bias, atol=0.1)


def classifier_accuracy(path, weights, threshold=0.0):
    """Accuracy of the exported two-class classifier (inputs f0..fN, logits) against the rule
    that labelled its training data: ``x . weights > threshold``."""
    import numpy as np

    x = np.random.default_rng(5).uniform(-1, 1, (2000, len(weights))).astype(np.float32)
    logits = serve(path, {f"f{i}": x[:, i] for i in range(len(weights))})
    return float(np.mean(np.argmax(logits, axis=1) == (x @ np.array(weights, np.float32) > threshold)))


def assert_nodes_logged(app_dir, names):
    logs = os.path.join(app_dir, "nodes", "logs")
    assert sorted(f for f in os.listdir(logs) if f.endswith(".log") and ".tf-import" not in f) == sorted(
        f"{n}.log" for n in names)
    for name in names:
        with open(os.path.join(logs, f"{name}.log")) as f:
            assert f.read().strip(), f"{name}'s log is empty"


# -- issue: default flags work where hosts share no disk -------------------------------------------

def test_quickstart_ps_mode_exports_to_the_edge_and_brings_every_log_home(cluster, tmp_path):
    run = submit_on(cluster.edge, [QUICKSTART, "--ps", 1, "--workers", 2, "--app-name", "mh-ps",
                                   *master(cluster)], str(tmp_path / "home"))
    assert run.returncode == 0, run.output[-4000:]
    app_dir = run.app_dir("mh-ps")
    assert_linear(os.path.join(app_dir, "model"), QUICKSTART_W, QUICKSTART_B)  # on the edge host
    assert_nodes_logged(app_dir, ["ps-0", "worker-0", "worker-1"])
    # The nodes ran on the worker hosts, and the console names the address they reached us at.
    assert "nodes registered 3/3 on h" in run.stdout
    assert f"ZooKeeper: embedded server at {cluster.edge.address}:" in run.stdout \
        or "ZooKeeper: embedded server at edge:" in run.stdout
    # train's output, from the coordinator: "learned weights [..] bias b".
    learned = re.search(r"learned weights \[([^\]]*)\] bias (\S+)", run.stdout)
    assert learned, run.stdout[-3000:]
    weights = [float(w) for w in learned.group(1).split(",")] + [float(learned.group(2))]
    for got, want in zip(weights, QUICKSTART_W + [QUICKSTART_B], strict=True):
        assert abs(got - want) < 0.1, weights


def test_keras3_allreduce_job_with_its_own_modules_and_py_files(cluster, tmp_path):
    """The job file, its sibling module and a --py-files package exist only on the edge; the
    chief's prints reach the console, its model and checkpoints reach the edge."""
    code = tmp_path / "job"
    lib = tmp_path / "lib" / "shapes_lib"
    code.mkdir()
    lib.mkdir(parents=True)
    (lib / "__init__.py").write_text("UNITS = 16\n")
    (code / "siblings.py").write_text("GREETING = 'chief says: the sibling module travelled'\n")
    (code / "job.py").write_text(textwrap.dedent('''
        import numpy as np
        from pyspark.sql import functions as F
        from elearn import SparkTFJob
        import shapes_lib, siblings

        W = [1.5, -2.0, 1.0, 0.5]

        class Classifier(SparkTFJob):
            def pre_train(self, spark):
                df = spark.range(4000, numPartitions=4)
                for i in range(4):
                    df = df.withColumn(f"f{i}", (F.rand(seed=i) * 2 - 1).cast("float"))
                score = sum(F.col(f"f{i}") * w for i, w in enumerate(W))
                return df.withColumn("label", (score > 0).cast("long")).drop("id")

            def train(self, ctx):
                keras = ctx.keras
                with ctx.strategy.scope():
                    inputs = {f"f{i}": keras.Input(shape=(), name=f"f{i}") for i in range(4)}
                    x = keras.layers.Concatenate()([keras.layers.Reshape((1,))(v) for v in inputs.values()])
                    x = keras.layers.Dense(shapes_lib.UNITS, activation="relu")(x)
                    model = keras.Model(inputs, keras.layers.Dense(2)(x))
                    model.compile(optimizer=keras.optimizers.Adam(0.02), metrics=["accuracy"],
                                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
                model.fit(ctx.dataset(label="label", batch_size=50), epochs=3,
                          steps_per_epoch=ctx.steps_per_epoch(50), verbose=0)
                if ctx.is_chief:
                    print(siblings.GREETING, flush=True)
                return model
    '''))
    run = submit_on(cluster.edge, [code / "job.py", "--workers", 2, "--app-name", "mh-ar",
                                   "--py-files", lib, *master(cluster)], str(tmp_path / "home"))
    assert run.returncode == 0, run.output[-4000:]
    assert "chief says: the sibling module travelled" in run.stdout
    app_dir = run.app_dir("mh-ar")
    assert classifier_accuracy(os.path.join(app_dir, "model"), [1.5, -2.0, 1.0, 0.5]) > 0.9
    assert sorted(os.listdir(os.path.join(app_dir, "checkpoints", "fit-0"))) and \
        os.path.exists(os.path.join(app_dir, "checkpoints", "fit-0", "checkpoint"))
    assert_nodes_logged(app_dir, ["worker-0", "worker-1"])
    with open(os.path.join(app_dir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["metrics"]["accuracy"] > 0.9, summary


def readme_cluster_command(path: str, substitutions: dict) -> list[str]:
    """The command of the "On a cluster" section of the example's README as argv (without
    ``pl_submit``), each placeholder replaced. A placeholder the README no longer has fails the
    test: the command run is the one a user copies."""
    import shlex

    text = open(path).read()
    section = text[text.index("## On a cluster"):]
    block = section[section.index("```\n") + 4:]
    command = block[:block.index("```")].replace("\\\n", " ")
    for placeholder, value in substitutions.items():
        assert placeholder in command, f"{placeholder!r} is no longer in the README's command: {command}"
        command = command.replace(placeholder, value)
    argv = shlex.split(command)
    assert argv[0] == "pl_submit", command
    return argv[1:]


def test_fm_examples_cluster_command_ships_its_venv_meets_in_zookeeper_and_keeps_the_model_in_s3(
        cluster, s3, tmp_path):
    """The FM example's README command for a cluster, run on the edge from a folder only the edge
    has (the job imports its sibling modules): a venv packed at submit and unpacked on every
    executor, whose interpreter and TensorFlow the nodes run; a ZooKeeper outside the application,
    which the nodes on the worker hosts reach; checkpoints and the model in S3, the model scored
    from there by the executors in post_train; the data and the outputs on a mount."""
    import shutil

    import pyarrow.parquet as pq
    from envbuild import build_runtime_venv

    folder = shutil.copytree(os.path.join(ROOT, "examples", "fm_movielens"), str(tmp_path / "fm"))
    venv = build_runtime_venv(str(tmp_path / "venvs" / "fm"))
    shared = cluster.shared_dir
    os.makedirs(os.path.join(shared, "ml-1m"), exist_ok=True)
    shutil.copy(SAMPLE, os.path.join(shared, "ml-1m"))  # the 1,501 sample ratings stand for the data
    out = tmp_path / "fm.jsonl"
    with zookeeper_on(cluster.edge, 2282, str(tmp_path / "zk.log"), address=cluster.edge.address) as zk:
        before = zookeeper_zxid(cluster.edge, zk)
        argv = readme_cluster_command(os.path.join(ROOT, "examples", "fm_movielens", "README.md"), {
            "examples/fm_movielens/fm_job.py": os.path.join(folder, "fm_job.py"),
            "spark://spark-master:7077": cluster.master_url, "~/venvs/fm": venv,
            "zk1:2181,zk2:2181,zk3:2181": zk, "s3://my-bucket/": "s3://elearn/", "/mnt/shared/": f"{shared}/"})
        # What the test adds: a small run, S3 credentials for moto, an uncompressed archive (faster).
        run = submit_on(cluster.edge, [*argv, "--app-name", "mh-fm", *FM_TRAINING, "--arg", "shard_kib=1",
                                       "--arg", f"out={out}", "--register-timeout", 600, *s3.executor_conf()],
                        str(tmp_path / "home"), env={**s3.env(), "ELEARN_PACK_LEVEL": "0"}, timeout=1200)
        assert run.returncode == 0, run.output[-4000:]
        # The application met in the external ZooKeeper (its znodes written there), and no other.
        assert f"ZooKeeper: external ensemble {zk}" in run.stdout and "embedded server" not in run.stdout
        assert zookeeper_zxid(cluster.edge, zk) > before + 10
    assert f"packing {venv} with venv-pack" in run.output
    got = {e["event"]: e for e in map(json.loads, out.read_text().splitlines())}
    assert got["train"]["rows"] == 1369 and got["train"]["mode"] == "ps"
    # 1 KiB shards: the 30 x 16 user table is listed as its parts, one on each PS, 30 rows together.
    parts = [s for v in got["train"]["placement"] if v["name"].startswith("user_idx_embedding")
             for s in v["shards"]]
    assert {s["device"] for s in parts} == {"/job:ps/replica:0/task:0/device:CPU:0",
                                            "/job:ps/replica:0/task:1/device:CPU:0"}
    assert len(parts) == 2 and sum(s["shape"][0] for s in parts) == 30
    check_evaluation(got, below_mean=False)  # PS mode: the loss fell; the RMSE is only sane (see there)
    assert "validation RMSE on 132 ratings" in run.stdout
    # Every TF node ran the unpacked archive's interpreter and its TensorFlow, not the edge's.
    logs = os.path.join(run.app_dir("mh-fm"), "nodes", "logs")
    for name in ("ps-0", "ps-1", "worker-0", "worker-1"):
        line = next(ln for ln in open(os.path.join(logs, f"{name}.log")) if "serving at" in ln)
        prefix, tf_dir = re.search(r"\(python (\S+), tensorflow (\S+)\)", line).groups()
        assert prefix.endswith(os.sep + "environment") and prefix != sys.prefix, line
        assert tf_dir.startswith(prefix + os.sep), line
    # Checkpoints and the model in S3; the vocabularies and the prediction table on the mount.
    assert "checkpoint" in s3.listing("s3://elearn/fm/checkpoints/fit-0")
    assert "saved_model.pb" in s3.listing("s3://elearn/fm/model")
    assert got["outputs"]["model"] == "s3://elearn/fm/model"
    assert got["outputs"]["vocabularies"]["user"] == f"{shared}/fm-outputs/vocab/users.parquet"
    users = pq.read_table(got["outputs"]["vocabularies"]["user"]).to_pydict()
    assert sorted(users["user_idx"]) == list(range(30))
    predictions = pq.read_table(got["outputs"]["predictions"]).to_pylist()
    assert len(predictions) == 132 and 1.0 < sum(r["prediction"] for r in predictions) / 132 < 5.0


def test_allreduce_wider_than_the_clusters_slots_fails_with_the_slot_arithmetic(cluster, tmp_path):
    """7 allreduce workers on 3 hosts of 2 cores: Spark's barrier check refuses the stage, and the
    error gives the slots the cluster offered and the fix, within --register-timeout."""
    t0 = time.monotonic()
    run = submit_on(cluster.edge, [job("allreduce_nofeed.py"), "--workers", 7, "--app-name", "mh-wide",
                                   *short_register_timeout(cluster, 20)], str(tmp_path / "home"), timeout=600)
    assert run.returncode == 1, run.output[-3000:]
    assert ("allreduce mode runs its 7 workers as one barrier stage, all at once, but the cluster "
            "offered 6 task slots on 3 executor(s)") in run.stderr, run.output[-3000:]
    assert "or ask for fewer --workers" in run.stderr
    assert time.monotonic() - t0 < 20 + 120


def test_nodes_that_cannot_reach_zookeeper_fail_naming_the_address(cluster, tmp_path):
    """--zk 127.0.0.1:PORT reaches a ZooKeeper on the edge from the driver, and nothing from the
    worker hosts: the nodes fail within the register timeout naming the address they tried."""
    port = 2281
    with zookeeper_on(cluster.edge, port, str(tmp_path / "zk.log")) as zk:
        t0 = time.monotonic()
        run = submit_on(cluster.edge, [job("linear_fit.py"), "--ps", 1, "--workers", 1, "--app-name", "mh-zk",
                                       "--zk", zk, *short_register_timeout(cluster, 30)],
                       str(tmp_path / "home"), timeout=600)
        took = time.monotonic() - t0
    assert run.returncode == 1, run.output[-4000:]
    assert f"cannot reach ZooKeeper at '127.0.0.1:{port}'" in run.stderr, run.output[-4000:]
    assert took < 30 + 90, f"took {took:.0f}s"


def test_nodes_that_cannot_reach_the_drivers_file_service_fail_naming_the_address(cluster, tmp_path):
    """ELEARN_HOST=127.0.0.1 on the edge: the driver tells the nodes an address that is their own
    loopback. Each node checks the driver's file service (where its log, checkpoints and model go)
    before anything else and fails within the register timeout, naming the address and the fix."""
    t0 = time.monotonic()
    run = submit_on(cluster.edge, [job("allreduce_nofeed.py"), "--workers", 2, "--app-name", "mh-nofiles",
                                   *short_register_timeout(cluster, 10)],
                    str(tmp_path / "home"), env={"ELEARN_HOST": "127.0.0.1"}, timeout=600)
    took = time.monotonic() - t0
    assert run.returncode == 1, run.output[-4000:]
    assert re.search(r"worker:\d on h\d cannot reach the driver's file service at 127\.0\.0\.1:\d+ "
                     r"\(ConnectionRefusedError", run.stderr), run.output[-4000:]
    assert "set ELEARN_HOST to an address of the driver's host they reach" in run.stderr
    assert took < 240, f"took {took:.0f}s"


def test_a_file_mount_missing_on_the_worker_hosts_is_refused_before_training(cluster, tmp_path):
    """The shared directory stays mounted on the edge only (each worker host sees a bare, empty
    directory there): the driver's own check passes, the nodes find no mark of the driver's, and
    the job fails before any training, naming the host and the fix. Nothing lands on the hosts'
    local disks and the driver's mark is removed."""
    shared = cluster.shared_dir
    workers = cluster.hosts
    for h in workers:
        h.hide(shared)
    try:
        t0 = time.monotonic()
        run = submit_on(cluster.edge, [job("allreduce_classifier.py"), "--workers", 2, "--app-name", "mh-nomount",
                                       "--arg", "rows=400", "--arg", "epochs=1",
                                       "--model-dir", f"file://{shared}/nomount-model", *master(cluster)],
                        str(tmp_path / "home"), timeout=600)
        took = time.monotonic() - t0
        on_hosts = {h.name: os.listdir(h.path(shared)) for h in workers}
    finally:
        for h in workers:
            h.unhide(shared)
    assert run.returncode == 1, run.output[-4000:]
    assert re.search(rf"--model-dir file://{re.escape(shared)}/nomount-model is not the driver's directory on host h\d: "
                     r"the mark the driver left there \(\.elearn-mount-mh-nomount-model-dir-\w+\) is missing",
                     run.stderr), run.output[-4000:]
    assert "Mount it on h" in run.stderr and "s3://" in run.stderr, run.stderr[-2000:]
    assert "training: train(ctx) runs" not in run.stdout
    assert on_hosts == {h.name: [] for h in workers}, on_hosts   # nothing written on a local disk
    assert os.listdir(f"{shared}/nomount-model") == []           # no model, and no mark left
    assert took < 300, f"took {took:.0f}s"


@contextlib.contextmanager
def worker_hosts_isolated(cluster):
    """No worker host reaches another (a firewall between them); all still reach the edge, where
    the Spark master, the driver and ZooKeeper run."""
    workers = cluster.hosts
    pairs = [(a, b) for a in workers for b in workers if a is not b]
    for a, b in pairs:
        a.block(b.address)
    try:
        yield
    finally:
        for a, b in pairs:
            a.unblock(b.address)


def submit_isolated(cluster, tmp_path, args):
    """``pl_submit args`` on the edge while the worker hosts cannot reach each other, with a
    ``REGISTER`` s register timeout; the run and how long it took."""
    with worker_hosts_isolated(cluster):
        t0 = time.monotonic()
        run = submit_on(cluster.edge, [*args, *short_register_timeout(cluster, REGISTER)],
                        str(tmp_path / "home"), timeout=600)
        return run, time.monotonic() - t0


# --register-timeout of the runs above: each probe of a peer gives up after it, well before
# PEER_TIMEOUT (30 s); the rest of the phase around the probes took 7.5 s at a load of 28.
REGISTER = 10


def phases(run, app_id):
    with open(os.path.join(run.app_dir(app_id), "summary.json")) as f:
        return json.load(f)["phases"]


PEER = r"(worker[: ]\d) on (h\d) cannot reach (ps:0|worker \d) at (10\.[\d.]+:\d+) \((PermissionError|TimeoutError|OSError)"


def assert_blocked_between_hosts(cluster, found):
    """Each named failure is a worker host that could not reach another worker host."""
    workers = {h.address for h in cluster.hosts}
    for who, host, peer, address, _ in found:
        assert address.split(":")[0] in workers - {cluster.host(host).address}, (who, host, peer, address)


def test_allreduce_workers_that_cannot_reach_each_other_fail_naming_who_and_where(cluster, tmp_path):
    """Three workers on at least two hosts that cannot reach each other (ZooKeeper and the driver
    they reach): every worker probes its peers' ports before TensorFlow starts, and the job fails
    within the register timeout naming who cannot reach whom at which address."""
    run, took = submit_isolated(cluster, tmp_path, [job("allreduce_nofeed.py"), "--workers", 3,
                                                    "--app-name", "mh-noreach-ar"])
    assert run.returncode == 1, run.output[-4000:]
    assert "allreduce workers cannot reach each other's TF ports" in run.stderr, run.output[-4000:]
    found = re.findall(PEER, run.stderr)
    assert found, run.stderr[-3000:]
    assert_blocked_between_hosts(cluster, found)
    assert "allow TCP between the executors' hosts" in run.stderr
    # Registered, every worker probed its peers for the register timeout, the stage failed: all
    # in the phase after registration, which a probe running on to PEER_TIMEOUT would outlast.
    spent = phases(run, "mh-noreach-ar")
    assert REGISTER <= spent["train"] < PEER_TIMEOUT, (spent, took)


def test_ps_workers_that_cannot_reach_the_parameter_server_fail_naming_it(cluster, tmp_path):
    """One PS and three workers on three isolated hosts (a host has 2 task slots, so at most one
    worker shares the PS's host): the workers that cannot reach ps:0 say so before training, and
    the job fails naming them all."""
    code = tmp_path / "ps_nofeed.py"
    code.write_text(textwrap.dedent("""
        from elearn import SparkTFJob

        class NoFeed(SparkTFJob):
            def train(self, ctx):
                raise AssertionError("train must not start on a cluster that cannot form")
    """))
    run, _ = submit_isolated(cluster, tmp_path, [code, "--ps", 1, "--workers", 3, "--app-name", "mh-noreach-ps"])
    assert run.returncode == 1, run.output[-4000:]
    assert "the TF cluster cannot form" in run.stderr, run.output[-4000:]
    found = re.findall(PEER, run.stderr)
    assert found and {peer for _, _, peer, _, _ in found} == {"ps:0"}, run.stderr[-3000:]
    assert_blocked_between_hosts(cluster, found)
    assert "train must not start" not in run.output
    # The probes' deadline is bounded in the allreduce test above (the same probe, given the
    # register timeout in both modes); in PS mode a failed run's phases do not separate the probes
    # from the TF servers' start (both fall after the last mark, into "teardown").


# -- faults -------------------------------------------------------------------------------------

def recover_args(tmp_path, app, *extra, steps=400, pause=0.4):
    files = {k: str(tmp_path / f"{k}.jsonl") for k in ("progress", "out", "marker")}
    return files, [job("recover_ctl.py"), "--ps", 1, "--workers", 2, "--app-name", app,
                   "--arg", f"steps={steps}", "--arg", "every=40", "--arg", f"pause={pause}",
                   *[a for k, p in files.items() for a in ("--arg", f"{k}={p}")], *extra]


def assert_learned(files):
    (out,) = lines(files["out"])
    for got, want in zip(out["w"], TRUE_W):
        assert abs(got - want) < 0.1, out
    assert abs(out["b"] - 1.0) < 0.1, out


def progress_until(run, files, what, check, timeout=600):
    """Wait for ``check(progress records)`` while the run is alive; the records. A run that ended
    first fails here: the fault that follows would hit nothing."""
    def seen():
        assert run.proc.poll() is None, f"pl_submit exited before {what}:\n{run.finish(60).output[-3000:]}"
        return check(lines(files["progress"]))

    wait_until(seen, timeout, on_timeout=timed_out(what))
    return lines(files["progress"])


def test_a_worker_hosts_network_cut_longer_than_its_session_is_survived(cluster, tmp_path):
    # Slow rounds (about a minute of training): the cut must end while training still runs.
    files, args = recover_args(tmp_path, "mh-cut", *master(cluster), steps=800, pause=1.0)
    run = start_on(cluster.edge, args, str(tmp_path / "home"))
    progress_until(run, files, "training to start", lambda rs: any(r.get("step", 0) >= 60 for r in rs))
    placed = node_hosts(cluster, run, "mh-cut")
    ps_hosts = {h for n, h in placed.items() if n.startswith("ps")}
    victim_node, victim = next((n, h) for n, h in sorted(placed.items())
                               if n.startswith("worker") and h not in ps_hosts)
    host = cluster.host(victim)
    host.link_down()
    try:  # the fault itself: cut until ZooKeeper expired the node's session and dropped its znode
        wait_until(lambda: victim_node not in node_hosts(cluster, run, "mh-cut"), 120, interval=1.0,
                   on_timeout=timed_out(f"{victim_node}'s ZooKeeper session to expire"))
        steps = [r["step"] for r in lines(files["progress"]) if "step" in r]
        assert run.proc.poll() is None and max(steps) < 800, steps  # training still runs
    finally:
        host.link_up()
    run.finish(900)
    assert run.returncode == 0, run.output[-4000:]
    assert_learned(files)
    assert f"{victim_node} left ZooKeeper" in run.stdout and f"{victim_node} registered again" in run.stdout


def test_a_ps_hosts_processes_all_killed_train_resumes_from_the_checkpoint_on_the_edge(cluster, tmp_path):
    files, args = recover_args(tmp_path, "mh-pskill", *master(cluster))
    run = start_on(cluster.edge, args, str(tmp_path / "home"))
    progress_until(run, files, "a first checkpoint", lambda rs: any(r.get("saved") for r in rs))
    placed = node_hosts(cluster, run, "mh-pskill")
    host = cluster.host(placed["ps:0"])
    host.kill_all()          # its Spark worker, executor, Python workers and TF processes
    try:
        run.finish(900)
    finally:
        host.start_worker()  # the host comes back for the tests after this one
    assert run.returncode == 0, run.output[-4000:]
    assert_learned(files)
    starts = [r for r in lines(files["progress"]) if "start" in r]
    assert len(starts) >= 2 and starts[-1]["start"] > 0, starts  # resumed, not from the beginning
    saved_before = [r["step"] for r in lines(files["progress"]) if r.get("saved")]
    assert starts[-1]["start"] in saved_before
    ckpt = os.path.join(run.app_dir("mh-pskill"), "checkpoints")
    assert os.path.exists(os.path.join(ckpt, "checkpoint"))  # the edge's disk held them


# -- storage: s3:// and file:// ------------------------------------------------------------------

def test_ps_mode_on_s3_resumes_after_a_ps_loss_and_predict_scores_from_s3(cluster, s3, tmp_path):
    files, args = recover_args(tmp_path, "mh-s3", "--checkpoint-dir", "s3://elearn/ps/ckpt",
                               "--model-dir", "s3://elearn/ps/model", *s3.executor_conf(), *master(cluster))
    run = start_on(cluster.edge, args, str(tmp_path / "home"), env=s3.env())
    wait_until(lambda: "checkpoint" in s3.listing("s3://elearn/ps/ckpt") or run.proc.poll() is not None, 600,
               on_timeout=timed_out("a checkpoint stored in S3"), interval=3)
    assert run.proc.poll() is None, run.finish(60).output[-3000:]  # the fault hits a running application
    ((_, pid),) = [(h, p) for h, p in tf_processes(cluster, "elearn.runtime.tf_server")
                   if environ_has(p, '"role": "ps"')]
    os.kill(pid, signal.SIGKILL)
    run.finish(900)
    assert run.returncode == 0, run.output[-4000:]
    assert_learned(files)
    assert "restart 1/3: ps:0" in run.stdout
    starts = [r for r in lines(files["progress"]) if "start" in r]
    assert len(starts) == 2 and starts[-1]["start"] > 0 and starts[-1]["restored"], starts
    with open(os.path.join(run.app_dir("mh-s3"), "summary.json")) as f:
        restarts = json.load(f)["restarts"]
    assert restarts["total"] == 1 and restarts["by_cause"] == {"ps:0": 1}, restarts
    # Steps trained again past the restored checkpoint: fewer than a save interval and a round.
    assert 0 <= restarts["steps_lost"] < 40 + 20, restarts
    assert "saved_model.pb" in s3.listing("s3://elearn/ps/model")
    # Scoring on the cluster's executors, with the model fetched from S3 by each of them.
    scored = s3.run_python(textwrap.dedent(f'''
        import json
        from pyspark.sql import SparkSession, functions as F
        import elearn
        spark = (SparkSession.builder.master("{cluster.master_url}").config("spark.executor.memory", "1g")
                 {"".join(f'.config("spark.executorEnv.{k}", "{v}")' for k, v in s3.env().items())}
                 .config("spark.pyspark.python", "{sys.executable}").getOrCreate())
        df = spark.range(200, numPartitions=4).select(
            F.array(*[(F.col("id") % 7 / 7.0).cast("float") for _ in range(4)]).alias("x"))
        rows = elearn.predict(df, "s3://elearn/ps/model", output="output_0").collect()
        print(json.dumps([[float(v) for v in r.x] + [r.prediction] for r in rows]))
        spark.stop()
    '''), timeout=600)
    rows = json.loads(scored.strip().splitlines()[-1])
    assert len(rows) == 200
    for *x, prediction in rows:
        assert abs(prediction - (sum(a * w for a, w in zip(x, TRUE_W)) + 1.0)) < 0.3


def test_allreduce_mode_keeps_checkpoints_and_the_application_in_s3_and_the_model_on_a_mount(cluster, s3, tmp_path):
    """Checkpoints in S3; with --work-dir on S3 the application too (summary, events, every node's
    log, the chief's TensorBoard events), so it can be read without the edge; the model written in
    place on a file:// mount by the chief, which runs on a worker host."""
    shared = cluster.shared_dir
    run = submit_on(cluster.edge, [job("allreduce_classifier.py"), "--workers", 2, "--app-name", "mh-s3ar",
                                   "--arg", "rows=4001", "--arg", "epochs=2", "--arg", "tensorboard=1",
                                   "--checkpoint-dir", "s3://elearn/ar/ckpt", "--model-dir", f"file://{shared}/ar-model",
                                   "--work-dir", "s3://elearn/ar/work",
                                   *s3.executor_conf(), *master(cluster)], str(tmp_path / "home"), env=s3.env())
    assert run.returncode == 0, run.output[-4000:]
    stored = s3.listing("s3://elearn/ar/ckpt")
    assert "fit-0/checkpoint" in stored and any(k.startswith("fit-0/ckpt-") for k in stored), stored
    assert classifier_accuracy(f"{shared}/ar-model", [1.5, -2.0, 1.0, 0.5, -1.0, 2.5], threshold=0.2) > 0.9
    assert f"model: file://{shared}/ar-model" in run.stdout
    app = s3.listing("s3://elearn/ar/work/mh-s3ar")
    assert {"summary.json", "events.jsonl", "nodes/logs/worker-0.log", "nodes/logs/worker-1.log"} <= set(app), app
    assert any(k.startswith("tensorboard/") and "tfevents" in k for k in app), app
    assert not any(k.startswith("model/") for k in app), app
    # The chief ran on another host; its events are on the edge too, for TensorBoard there.
    local_events = [f for _, _, fs in os.walk(os.path.join(run.app_dir("mh-s3ar"), "tensorboard"))
                    for f in fs if "tfevents" in f]
    assert local_events
    with open(os.path.join(run.app_dir("mh-s3ar"), "summary.json")) as f:
        assert json.load(f)["metrics"]["accuracy"] > 0.9


def test_the_driver_killed_then_the_same_command_on_another_host_resumes_from_s3(cluster, s3, tmp_path):
    """Resume from anywhere: the edge dies mid-training; h3, a host that never saw the first run's
    files, runs the same command and carries on from the checkpoint in S3."""
    progress = "/tmp/rerun-progress.jsonl"   # as each driver host sees its own /tmp
    args = [job("recover_ctl.py"), "--ps", 1, "--workers", 2, "--app-name", "mh-rerun",
            "--arg", "steps=400", "--arg", "every=40", "--arg", f"progress={progress}",
            "--arg", "out=/tmp/rerun-out.jsonl", "--checkpoint-dir", "s3://elearn/rerun/ckpt",
            *s3.executor_conf(), *master(cluster)]
    first = start_on(cluster.edge, args, str(tmp_path / "home"), env=s3.env())
    wait_until(lambda: "checkpoint" in s3.listing("s3://elearn/rerun/ckpt") or first.proc.poll() is not None, 600,
               on_timeout=timed_out("a checkpoint stored in S3"), interval=3)
    assert first.proc.poll() is None, first.finish(60).output[-3000:]  # killed mid-run, not after it
    os.killpg(first.proc.pid, signal.SIGKILL)  # the driver and everything it started
    first.finish(60)
    cluster.wait_quiet(timeout=120, services=SERVICES)
    # What S3 holds (a save not uploaded when the driver died is not there: the state names the
    # last complete one).
    state = s3.run_python("from elearn.storage.stores import open_storage; "
                          "print(open_storage('s3://elearn/rerun/ckpt').read_bytes('checkpoint').decode())")
    saved = int(state.split('model_checkpoint_path: "ckpt-')[1].split('"')[0])
    assert 0 < saved < 400, saved  # killed before its last save (step 400): there is training left
    other = cluster.host("h3")
    second = submit_on(other, args, "/tmp/rerun-home", env=s3.env())
    assert second.returncode == 0, second.output[-4000:]
    assert "resuming from checkpoint" in second.stdout
    starts = [r for r in lines_on(other, progress) if "start" in r]
    assert starts == [starts[0]] and starts[0]["start"] == saved > 0, (starts, saved)
    (out,) = lines_on(other, "/tmp/rerun-out.jsonl")
    for got, want in zip(out["w"], TRUE_W):
        assert abs(got - want) < 0.1, out
    assert abs(out["b"] - 1.0) < 0.1, out
