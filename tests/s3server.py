"""A real S3 endpoint for tests: moto's standalone server (``moto[server]``) in a child process.

pyarrow reaches it the way it reaches any S3-compatible store, through ``AWS_ENDPOINT_URL``; the
credentials are dummies (moto checks none). The child dies with the test process (PDEATHSIG), and
:meth:`MotoS3.stop` proves it is gone.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from elearn.cluster.procs import free_port, pid_alive, popen_child, stop_process


class MotoS3:
    def __init__(self, log_path: str, host: str = "127.0.0.1"):
        self.host, self.port = host, free_port(host)
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def start(self, timeout: float = 60.0) -> "MotoS3":
        with open(self.log_path, "ab") as log:
            self.proc = popen_child([sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:                      # poll until it answers HTTP, with a deadline
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=2):
                    return self
            except urllib.error.HTTPError:
                return self              # any HTTP answer means it serves
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto server did not answer at {self.endpoint} within {timeout:.0f}s")
            time.sleep(0.1)

    def create_bucket(self, name: str) -> None:
        import pyarrow.fs as pafs

        fs, _ = pafs.FileSystem.from_uri(f"s3://{name}?allow_bucket_creation=true")
        fs.create_dir(name)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=5)
            assert not pid_alive(self.proc.pid), f"moto server {self.proc.pid} still running"
            self.proc = None


def with_env(env: dict[str, str]):
    """Set ``env`` in os.environ; returns a function that restores what was there."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)

    def restore() -> None:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return restore
