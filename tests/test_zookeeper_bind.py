"""The embedded ZooKeeper listens on one address: loopback when every node runs on this host.

A local run's application znodes are readable by any client that reaches the server (their ACL
lets anyone read, so ``pl_submit status`` works without the secret); listening on loopback keeps
the network out. Checked with a real server started the way ``pl_submit`` starts it, and a
connection to another address of this host, which must be refused.
"""
import contextlib
import errno
import os
import socket
import subprocess

import pytest

from elearn.cluster.hosts import listen_address, route_to
from elearn.driver.app import Application
from elearn.driver.console import Console
from elearn.driver.options import SubmitOptions
from elearn.submit import backend_for


def _addresses() -> list[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines() if " inet " in line]


@contextlib.contextmanager
def another_address():
    """A non-loopback address of this host: an existing one, or one on a dummy interface made for
    the test (root only) and removed after it."""
    found = [a for a in _addresses() if not a.startswith("127.")]
    if found:
        yield found[0]
        return
    if os.geteuid() != 0:
        pytest.skip("this host has only loopback, and adding an address needs root")
    link, address = "elearnzk0", "198.51.100.7"
    subprocess.run(["ip", "link", "add", link, "type", "dummy"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", link], check=True)
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
        yield address
    finally:
        subprocess.run(["ip", "link", "del", link], check=False)


def _connects(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(5)
        code = s.connect_ex((address, port))
    assert code in (0, errno.ECONNREFUSED), os.strerror(code)
    return code == 0


def test_a_local_runs_zookeeper_refuses_connections_on_other_addresses(tmp_path):
    opts = SubmitOptions.from_kwargs(ps=1, workers=1, work_dir=str(tmp_path), quiet=True)
    app = Application(opts, backend_for(opts), Console(quiet=True))
    try:
        app.check()                   # decides the master: local[2,4]
        app.start_zookeeper()         # as start() does, without Spark
        port = app.zk.port
        assert app.zk_for_nodes() == f"127.0.0.1:{port}"
        assert _connects("127.0.0.1", port)
        with another_address() as other:
            assert not _connects(other, port), f"ZooKeeper answered on {other}:{port}"
        assert app.registry.client.exists(app.registry.base)  # it serves on loopback
    finally:
        app.close()


def test_the_address_follows_where_the_nodes_run(monkeypatch):
    monkeypatch.delenv("ELEARN_HOST", raising=False)
    for master in ("local", "local[4]", "local[3,4]", "local-cluster[2,1,1024]"):
        assert listen_address(master) == "127.0.0.1", master
    with another_address() as other:
        # A cluster master on another host: the address of the interface that routes there.
        assert listen_address(f"spark://{other}:7077,{other}:7078") == route_to(other)
        assert listen_address(f"k8s://https://{other}:6443") == route_to(other)
        assert listen_address("yarn", driver_host=other) == other     # spark.driver.host, when set
        monkeypatch.setenv("ELEARN_HOST", other)
        assert listen_address("yarn") == other
        assert listen_address("local[2]") == "127.0.0.1"              # local stays on loopback
    # A Spark Connect server on this host: its nodes run here too.
    monkeypatch.delenv("ELEARN_HOST")
    assert listen_address("local[2]", remote="sc://localhost:15002/;user_id=x") == "127.0.0.1"
