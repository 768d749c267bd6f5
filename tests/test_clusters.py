"""A real multi-process Spark cluster: standalone master and worker, with a shipped environment.

The master and the worker are started from pyspark's own ``bin/spark-class`` (a pip install has no
``sbin/start-master.sh``) on loopback, as separate JVMs; the worker launches executor JVMs, which
launch Python workers, which start elearn's daemons and TF processes. The job ships a virtualenv
packed at submit time with venv-pack, so this one run covers both the cluster and the environment:
executors unpack the archive and every TF node must run inside it.

Why one run: a packable TensorFlow environment is about 2 GB (TensorFlow alone is most of it), and
shipping it costs a pack, a copy and an unpack on the driver and one on the executor. The venv is a
real ``python -m venv`` whose site-packages hold the runtime's files as hard links (see envbuild.py).
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid

import pyspark
import pytest
from conftest import assert_no_orphans, cmdline, job, tagged_pids
from envbuild import build_runtime_venv

from elearn.cluster.procs import free_port

pytestmark = pytest.mark.slow

TRUE_W = [2.0, -3.0, 0.5, 1.5]
SPARK_HOME = os.path.dirname(pyspark.__file__)


class Standalone:
    """A standalone master and one worker on 127.0.0.1; every process carries ``tag``."""

    def __init__(self, root, cores=3, memory="3g"):
        self.tag = uuid.uuid4().hex
        self.work = os.path.join(root, "work")
        self.port, self.ui = free_port(), free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        env = {**os.environ, "SPARK_HOME": SPARK_HOME, "SPARK_LOCAL_IP": "127.0.0.1",
               "SPARK_LOG_DIR": root, "ELEARN_TEST_TAG": self.tag}
        spark_class = os.path.join(SPARK_HOME, "bin", "spark-class")
        self.procs = []
        for name, args in (
                ("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                            "--port", str(self.port), "--webui-port", str(self.ui)]),
                ("worker", ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                            "--cores", str(cores), "--memory", memory, "--work-dir", self.work,
                            "--webui-port", str(free_port()), self.url])):
            log = open(os.path.join(root, f"{name}.log"), "w")
            self.procs.append(subprocess.Popen([spark_class] + args, env=env, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))
            log.close()

    def wait_ready(self, timeout=180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert all(p.poll() is None for p in self.procs), "standalone master or worker exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ui}/json/", timeout=2) as r:
                    if json.load(r).get("aliveworkers", 0) >= 1:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"standalone worker did not register with {self.url} in {timeout}s")

    def stop(self):
        for p in self.procs:  # each is its own process group: the JVM and the executors it forked
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


@pytest.fixture
def standalone(tmp_path):
    root = tmp_path / "cluster"
    root.mkdir()
    cluster = Standalone(str(root))
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()
        assert_no_orphans(cluster.tag, timeout=60)  # master, worker, executors and TF nodes gone
        shutil.rmtree(cluster.work, ignore_errors=True)  # executors' unpacked environments


@pytest.mark.timeout(1500)  # builds and ships a 2 GB environment, then runs two applications
def test_ps_job_on_standalone_cluster_runs_tf_nodes_inside_shipped_venv(pl_submit, tmp_path,
                                                                        standalone):
    venv = build_runtime_venv(str(tmp_path / "runtime-venv"))
    out = tmp_path / "out.jsonl"
    try:
        run = pl_submit(job("linear_fit.py"), "--ps", 1, "--workers", 2, "--master", standalone.url,
                        "--venv", venv, "--app-name", "standalone-venv",
                        "--conf", "spark.executor.memory=1g", "--register-timeout", 400,
                        "--arg", f"out={out}", timeout=900, env={"ELEARN_PACK_LEVEL": "0"})
        assert run.returncode == 0, run.output[-4000:]
        assert f"packing {venv} with venv-pack" in run.output
        # Trained for real across the processes of the cluster.
        (result,) = [json.loads(line) for line in out.read_text().splitlines()]
        for got, want in zip(result["w"], TRUE_W):
            assert abs(got - want) < 0.05, result
        # Every TF node ran the unpacked archive's interpreter and its TensorFlow.
        logs = sorted(glob.glob(os.path.join(standalone.work, "app-*", "*", "elearn-nodes",
                                             "standalone-venv", "logs", "*.log")))
        assert [os.path.basename(p) for p in logs] == ["ps-0.log", "worker-0.log", "worker-1.log"]
        for path in logs:
            executor_dir = path.split(os.sep + "elearn-nodes" + os.sep)[0]
            shipped = os.path.realpath(os.path.join(executor_dir, "environment"))
            text = open(path).read()
            line = next(ln for ln in text.splitlines() if "serving at" in ln)
            prefix = line.split("(python ", 1)[1].split(", tensorflow ")[0]
            tf_dir = line.split(", tensorflow ", 1)[1].rstrip(")")
            assert os.path.realpath(prefix) == shipped, line
            assert os.path.realpath(tf_dir).startswith(shipped + os.sep), line
        # The daemons stopped their TF processes when the application ended.
        deadline = time.monotonic() + 60
        while any("elearn.runtime.tf_server" in cmdline(p) for p in tagged_pids(standalone.tag)):
            assert time.monotonic() < deadline, "TF node processes outlived the application"
            time.sleep(0.5)
        # Allreduce asks for more workers than the cluster's 3 cores: Spark's barrier check
        # refuses the stage, and the error gives the slot arithmetic, within --register-timeout.
        t0 = time.monotonic()
        too_many = pl_submit(job("allreduce_nofeed.py"), "--workers", 4, "--master", standalone.url,
                             "--register-timeout", 10, timeout=300)
        assert too_many.returncode == 1
        assert ("allreduce mode runs its 4 workers as one barrier stage, all at once, but the "
                "cluster offered 3 task slots on 1 executor(s)") in too_many.stderr, too_many.output[-3000:]
        assert time.monotonic() - t0 < 90
    finally:
        shutil.rmtree(venv, ignore_errors=True)
        shutil.rmtree(tmp_path / "envs", ignore_errors=True)
