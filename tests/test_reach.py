"""What a node checks before training on a cluster: that it reaches its peers' ports
(``elearn.cluster.peers``) and that a ``file://`` location is the driver's directory (``elearn.storage.mounts``).
Real sockets and real files here; the same checks across hosts are in test_multihost.py."""
import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from elearn.errors import StorageError
from elearn.storage.locations import parse_location
from elearn.storage.mounts import check_marks, leave_mark
from elearn.cluster.peers import describe, hold_port, unreachable


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def test_a_held_port_is_reached_and_a_closed_one_is_named_after_retrying_until_the_deadline():
    with hold_port() as held:
        peers = {"worker 0": f"127.0.0.1:{held.getsockname()[1]}", "ps:0": f"127.0.0.1:{closed_port()}"}
        t0 = time.monotonic()
        missed = unreachable(peers, within=1.5)
        took = time.monotonic() - t0
    assert list(missed) == ["ps:0"] and missed["ps:0"].startswith("ConnectionRefusedError"), missed
    assert 1.5 <= took < 7.5, took  # stops at its deadline, not at PEER_TIMEOUT (30 s)
    assert describe(missed, peers) == f"ps:0 at {peers['ps:0']} ({missed['ps:0']})"


def test_a_port_that_starts_listening_before_the_deadline_is_reached():
    port = closed_port()
    server = subprocess.Popen([sys.executable, "-c", (
        "import socket, time; time.sleep(1.0); s = socket.socket(); "
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(('127.0.0.1', {port})); s.listen(8); time.sleep(30)")])
    try:
        assert unreachable({"ps:0": f"127.0.0.1:{port}"}, within=20) == {}
    finally:
        server.kill()
        server.wait()


CHECK_IN_ANOTHER_PROCESS = """
import pickle, sys
from elearn.storage.mounts import check_marks
check_marks(pickle.loads(bytes.fromhex(sys.argv[1])))
print("seen")
"""


def test_a_mark_is_seen_in_the_directory_the_driver_wrote_and_nowhere_else(tmp_path):
    import pickle

    shared = tmp_path / "share"
    marks = (leave_mark("--model-dir", parse_location(f"file://{shared}"), "app-1"),
             leave_mark("--checkpoint-dir", parse_location(f"file://{shared}"), "app-1"))
    assert len({m.path for m in marks}) == 2 and all(os.path.basename(m.path).startswith(".elearn-mount-app-1-")
                                                     for m in marks)
    seen = subprocess.run([sys.executable, "-c", CHECK_IN_ANOTHER_PROCESS, pickle.dumps(marks).hex()],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    assert seen.stdout.strip() == "seen", seen.stderr

    os.replace(shared, tmp_path / "elsewhere")   # the path is now another, bare directory
    shared.mkdir()
    with pytest.raises(StorageError) as missing:
        check_marks(marks)
    host = socket.gethostname()
    assert f"--model-dir file://{shared} is not the driver's directory on host {host}" in str(missing.value)
    assert "is missing (FileNotFoundError)" in str(missing.value) and f"Mount it on {host}" in str(missing.value)

    with open(marks[0].path, "w") as f:         # a stale mark of another run at that path
        f.write("0" * 32)
    with pytest.raises(StorageError, match="holds another run's token"):
        check_marks(marks)
    for m in marks:
        m.remove()
    assert os.listdir(shared) == []


def test_a_node_that_cannot_reach_the_embedded_zookeeper_names_it_and_every_fix(tmp_path):
    """Not the user's --zk: the message must not tell them to check a flag they did not pass."""
    from elearn.errors import ClusterError
    from elearn.runtime.node_task import NodeTask
    from elearn.driver.options import SubmitOptions
    from elearn.specs import NodeSpec

    address = f"127.0.0.1:{closed_port()}"
    opts = SubmitOptions()
    spec = NodeSpec(app_id="a", zk=address, credentials=None, node_dir=str(tmp_path), same_host=True,
                    backend=None, register_timeout=opts.register_timeout, feed_timeout=opts.feed_timeout,
                    max_restarts=opts.max_restarts, embedded_zk=True)
    with pytest.raises(ClusterError) as err:
        NodeTask(spec, "worker", 1).join()
    message = str(err.value)
    assert f"worker:1 on {socket.gethostname()} cannot reach the driver's embedded ZooKeeper at {address} " \
           "(no answer within 15s)" in message, message
    assert "set ELEARN_HOST" in message and "or pass --zk" in message and "Check --zk" not in message
