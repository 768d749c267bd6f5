"""A real Spark Connect server for tests, started from pyspark's own jars:

    spark-submit --class org.apache.spark.sql.connect.service.SparkConnectServer spark-internal

with ``PYSPARK_PYTHON`` naming this interpreter for its Python workers. Every process it starts
(the JVM, its Python workers, and what elearn's node tasks fork) carries ``tag`` in its
environment, so a test can prove nothing is left on the server's side.
"""
from __future__ import annotations

import glob
import importlib
import os
import socket
import subprocess
import sys
import uuid

import pyspark

from elearn.cluster.procs import free_port, popen_child, stop_process
from elearn.cluster.waits import wait_until


def missing() -> str | None:
    """Why a Spark Connect server cannot run with this pyspark, or None if it can."""
    home = os.path.dirname(pyspark.__file__)
    if not glob.glob(os.path.join(home, "jars", "spark-connect_*.jar")):
        return (f"the Spark Connect server needs pyspark 4.0+ (jars/spark-connect_*.jar); "
                f"this is pyspark {pyspark.__version__}")
    try:  # the client's module checks its extras (grpcio, grpcio-status, ...) when imported
        importlib.import_module("pyspark.sql.connect.session")
    except Exception as exc:
        return f"the Spark Connect client is not installed ({exc})"
    return None


class ConnectServer:
    def __init__(self, log_path: str, master: str = "local[4]", conf: dict | None = None):
        self.log_path, self.master, self.conf = log_path, master, dict(conf or {})
        self.port = free_port()
        self.tag = uuid.uuid4().hex
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"sc://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300.0) -> "ConnectServer":
        home = os.path.dirname(pyspark.__file__)
        conf = {"spark.connect.grpc.binding.port": str(self.port), "spark.ui.enabled": "false",
                "spark.pyspark.python": sys.executable, **self.conf}
        argv = [os.path.join(home, "bin", "spark-submit"), "--class",
                "org.apache.spark.sql.connect.service.SparkConnectServer", "--master", self.master]
        for k, v in conf.items():
            argv += ["--conf", f"{k}={v}"]
        env = {**os.environ, "SPARK_HOME": home, "PYSPARK_PYTHON": sys.executable, "ELEARN_TEST_TAG": self.tag,
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        with open(self.log_path, "ab") as log:
            self.proc = popen_child(argv + ["spark-internal"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        try:
            wait_until(self._listening, timeout, interval=0.3, on_timeout=lambda: RuntimeError(
                f"no Spark Connect server on port {self.port} after {timeout:.0f}s; see {self.log_path}"))
        except RuntimeError:
            self.stop()
            raise
        return self

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the Spark Connect server exited ({self.proc.returncode}); see {self.log_path}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=20)
            self.proc = None
