"""``--tensorboard``: a TensorBoard server on the driver over the application's log directory."""
from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys

from elearn.cluster.procs import free_port, popen_child, stop_process
from elearn.cluster.waits import wait_until


class TensorBoard:
    def __init__(self, log_dir: str, log_path: str, host: str = "127.0.0.1"):
        self.log_dir, self.log_path, self.host = log_dir, log_path, host
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self, timeout: float = 60.0) -> "TensorBoard":
        if importlib.util.find_spec("tensorboard") is None:
            # TensorFlow stopped depending on TensorBoard; say what to install rather than
            # letting the child die with a bare ModuleNotFoundError in its log.
            raise RuntimeError("--tensorboard needs the tensorboard package in the driver's "
                               "environment: pip install 'tensorboard>=2.21'")
        os.makedirs(self.log_dir, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = popen_child(
                [sys.executable, "-m", "tensorboard.main", "--logdir", self.log_dir,
                 "--host", self.host, "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})

        def listening():
            if self.proc.poll() is not None:
                raise RuntimeError(f"TensorBoard exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return True
            except OSError:
                return False

        wait_until(listening, timeout, on_timeout=lambda: RuntimeError(
            f"TensorBoard did not listen on {self.url} within {timeout:.0f}s; see {self.log_path}"))
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=5)
            self.proc = None
