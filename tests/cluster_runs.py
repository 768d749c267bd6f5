"""Running elearn on the simulated cluster (tests/simcluster.py): pl_submit on a host of it, where its
nodes ran, its processes, and a real S3 endpoint every host reaches."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass

from conftest import ROOT, timed_out

from elearn.cluster.waits import wait_until

PL_SUBMIT = [sys.executable, "-m", "plsubmit.cli"]


@dataclass
class EdgeRun:
    """A pl_submit run on a host of the cluster."""

    proc: subprocess.Popen
    home: str            # ELEARN_HOME, as the host sees it
    stdout: str = ""
    stderr: str = ""

    @property
    def returncode(self):
        return self.proc.returncode

    @property
    def output(self):
        return self.stdout + self.stderr

    def app_dir(self, app_id: str) -> str:
        return os.path.join(self.home, "apps", app_id)

    def finish(self, timeout: float = 900) -> "EdgeRun":
        try:
            self.stdout, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.stdout, self.stderr = self.proc.communicate()
            raise AssertionError(f"pl_submit did not finish within {timeout}s:\n{self.output[-4000:]}")
        return self


def start_on(host, args, home: str, env: dict | None = None) -> EdgeRun:
    """Start ``pl_submit args`` on ``host`` with ELEARN_HOME ``home`` (a path as that host sees it)."""
    full = {"ELEARN_HOME": home, "PYTHONPATH": ROOT, **(env or {})}
    host.run(["mkdir", "-p", home], timeout=30, check=True)
    proc = host.popen(PL_SUBMIT + [str(a) for a in args], env=full, cwd=home, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True)
    return EdgeRun(proc, home)


def submit_on(host, args, home: str, env: dict | None = None, timeout: float = 900) -> EdgeRun:
    return start_on(host, args, home, env).finish(timeout)


def node_hosts(cluster, run: EdgeRun, app_id: str, host=None) -> dict[str, str]:
    """``{"ps:0": "h2", "worker:0": "h1", ...}``: where each node of a running application is, as
    ``pl_submit status`` tells it on the driver's host (default the edge)."""
    host = host or cluster.edge
    status = host.run(PL_SUBMIT + ["status", app_id], env={"ELEARN_HOME": run.home, "PYTHONPATH": ROOT},
                      timeout=60)
    by_address = {h.address: h.name for h in cluster.all_hosts}
    out = {}
    for line in status.stdout.splitlines():
        parts = line.split()
        if parts and ":" in parts[0] and parts[0].split(":")[0] in ("ps", "worker"):
            out[parts[0]] = by_address.get(parts[1].rsplit(":", 1)[0], parts[1])
    return out


def tf_processes(cluster, marker: str) -> list[tuple[str, int]]:
    """``(host name, pid)`` of every process on the cluster whose command line has ``marker``."""
    found = []
    for h in cluster.hosts:
        for pid in h.pids():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append((h.name, pid))
            except OSError:
                continue
    return found


def environ_has(pid: int, text: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return text.encode() in f.read()
    except OSError:
        return False


def lines_on(host, path: str) -> list:
    """The JSON lines of ``path`` as ``host`` sees it (empty while it does not exist)."""
    real = host.path(path)
    if not os.path.exists(real):
        return []
    with open(real) as f:
        return [json.loads(line) for line in f if line.strip()]


class S3OnEdge:
    """moto's S3 server inside the edge host, reached by every host at the edge's address."""

    def __init__(self, cluster, port: int = 5055):
        self.cluster, self.port = cluster, port
        self.endpoint = f"http://{cluster.edge.address}:{port}"
        self.proc = None

    def env(self) -> dict:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def executor_conf(self) -> list:
        """``--conf spark.executorEnv.*``: how a user hands executors their S3 endpoint."""
        return [a for k, v in self.env().items() for a in ("--conf", f"spark.executorEnv.{k}={v}")]

    def start(self, log: str, timeout: float = 60) -> "S3OnEdge":
        with open(log, "ab") as f:
            self.proc = self.cluster.edge.popen([sys.executable, "-m", "moto.server", "-H",
                                                 self.cluster.edge.address, "-p", str(self.port)],
                                                stdout=f, stderr=subprocess.STDOUT)
        wait_until(lambda: self.cluster.edge.can_connect(self.cluster.edge.address, self.port), timeout,
                   on_timeout=timed_out(f"moto's S3 server at {self.endpoint}"))
        return self

    def run_python(self, code: str, host=None, timeout: float = 120) -> str:
        """Run ``code`` on ``host`` (default the edge) with this endpoint; its stdout."""
        host = host or self.cluster.edge
        out = host.run([sys.executable, "-c", code], env={**self.env(), "PYTHONPATH": ROOT}, timeout=timeout)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    def make_bucket(self, name: str) -> None:
        self.run_python("import pyarrow.fs as f; fs, _ = f.FileSystem.from_uri("
                        f"'s3://{name}?allow_bucket_creation=true'); fs.create_dir('{name}')")

    def listing(self, uri: str) -> dict:
        return json.loads(self.run_python(
            f"import json; from elearn.storage.stores import open_storage; print(json.dumps(open_storage('{uri}').list('')))"))

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(30)
            self.proc = None


@contextlib.contextmanager
def zookeeper_on(host, port: int, log: str, address: str | None = None):
    """A ZooKeeper server on ``host`` listening at ``address:port`` (every interface when None), as
    an external ensemble stands outside the application: started before ``pl_submit``, stopped
    after. Yields the ``host:port`` the driver connects to."""
    with open(log, "ab") as f:
        proc = host.popen([sys.executable, "-c", textwrap.dedent(f"""
            import time
            from elearn.cluster.zookeeper import EmbeddedZooKeeper
            EmbeddedZooKeeper("/tmp/zk-external-{port}", port={port}, address={address!r}).start()
            time.sleep(3600)
        """)], env={"PYTHONPATH": ROOT}, stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: host.can_connect(address or "127.0.0.1", port), 120,
                   on_timeout=timed_out(f"ZooKeeper on {host.name}"))
        yield f"{address or '127.0.0.1'}:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def zookeeper_zxid(host, hosts: str) -> int:
    """The last transaction id of the ZooKeeper at ``hosts``, asked from ``host`` (``srvr``, the
    four-letter command every server answers): it grows with every znode written."""
    out = host.run([sys.executable, "-c", textwrap.dedent(f"""
        from kazoo.client import KazooClient
        zk = KazooClient(hosts={hosts!r}, timeout=10)
        zk.start(timeout=30)
        print(zk.command(b"srvr"))
        zk.stop()
    """)], env={"PYTHONPATH": ROOT}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("Zxid:"))
    return int(line.split(":", 1)[1].strip(), 16)
