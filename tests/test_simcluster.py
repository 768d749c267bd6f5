"""The simulated multi-host cluster itself (tests/simcluster.py): hosts, isolation, Spark, faults,
teardown. Real namespaces, real Spark JVMs; needs root (skipped otherwise, failed on CI).

One cluster serves the module: the probe job, then the fault tests, then the test that tears it
down and checks nothing is left. Tests run in file order; each also works alone.
"""
import json
import os
import subprocess
import sys
import time

import pytest
from conftest import alive_pid
from simcluster import (CLUSTER_ENV, STATE_ROOT, WORKER_UI_PORT, SimCluster, SimClusterError,
                        _list_links, _list_netns, _netns_ino, _pids_in_netns, _pids_with_env, _teardown,
                        cluster_fixture, require, sweep)

pytestmark = pytest.mark.multihost

cluster = cluster_fixture(scope="module", hosts=3, shared=True)

# A PySpark driver for the edge host. One executor of one core per worker host
# (spark.cores.max = 3, standalone spreads them out), and the job waits for all three before it
# starts, so its first wave of tasks lands one task per host.
PROBE = r'''
import json, os, socket, sys
from pyspark.sql import SparkSession

master, edge_file, shared_file, out = sys.argv[1:5]
spark = (SparkSession.builder.master(master).appName("simcluster-probe")
         .config("spark.executor.cores", "1").config("spark.executor.memory", "512m")
         .config("spark.cores.max", "3")
         .config("spark.scheduler.minRegisteredResourcesRatio", "1.0")
         .config("spark.scheduler.maxRegisteredResourcesWaitingTime", "120s")
         .config("spark.ui.enabled", "false")
         # C1 only: these JVMs live for seconds, and the machine may have two cores.
         .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1")
         .config("spark.executor.extraJavaOptions", "-XX:TieredStopAtLevel=1").getOrCreate())
sc = spark.sparkContext
driver_host = sc.getConf().get("spark.driver.host")

def probe(_):
    name = socket.gethostname()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect((driver_host, 9))          # no packet is sent: this picks the route's source address
    source = udp.getsockname()[0]
    udp.close()
    shared = open(shared_file).read() if os.path.exists(shared_file) else None
    yield {"hostname": name, "resolved": socket.gethostbyname(name), "source": source,
           "driver_resolved": socket.gethostbyname(driver_host),
           "edge_file": os.path.exists(edge_file), "shared": shared}

rows = sc.parallelize(range(3), 3).mapPartitions(probe).collect()
executors = [e.host() for e in sc._jsc.sc().statusTracker().getExecutorInfos()]
with open(out, "w") as f:
    json.dump({"driver_host": driver_host, "driver_hostname": socket.gethostname(),
               "edge_file_on_driver": os.path.exists(edge_file), "rows": rows,
               "executor_hosts": executors}, f)
spark.stop()
'''


def test_hosts_have_their_own_names_addresses_and_disks(cluster, tmp_path):
    edge_file = tmp_path / "edge-only.txt"  # the machine's /tmp: the edge sees it, workers don't
    edge_file.write_text("only on the edge")
    shared_file = os.path.join(cluster.shared_dir, "probe.txt")
    with open(shared_file, "w") as f:
        f.write("on every host")
    script, out = tmp_path / "probe.py", tmp_path / "probe.json"
    script.write_text(PROBE)

    done = cluster.edge.run([cluster.python, script, cluster.master_url, edge_file, shared_file, out],
                            cwd=str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    result = json.loads(out.read_text())

    by_name = {h.name: h.address for h in cluster.hosts}
    rows = result["rows"]
    assert sorted(r["hostname"] for r in rows) == ["h1", "h2", "h3"], rows
    for r in rows:
        assert r["resolved"] == by_name[r["hostname"]], r   # /etc/hosts of the host
        assert r["source"] == by_name[r["hostname"]], r     # its own network
        assert r["edge_file"] is False, r                   # its own /tmp
        assert r["shared"] == "on every host", r            # the shared directory
        assert r["driver_resolved"] == cluster.edge.address, r
    # The driver ran on the edge. Spark's default spark.driver.host is the edge's *hostname*
    # (Spark 4 advertises the name, not an address): executors reach the driver because every
    # host's /etc/hosts resolves "edge".
    assert result["driver_hostname"] == "edge"
    assert result["driver_host"] == "edge"
    assert result["edge_file_on_driver"] is True
    assert set(result["executor_hosts"]) - {"edge"} == set(by_name.values())  # minus the driver
    # The application is over: its executors and Python workers go, the daemons stay.
    cluster.wait_quiet(timeout=60)


def test_private_paths_are_private(cluster):
    h1, h2 = cluster.hosts[:2]
    marker = "/tmp/written-on-h1"
    h1.run(["sh", "-c", f"echo h1 > {marker} && mkdir -p ~/.elearn/x ~/.cache/x"], check=True)
    assert os.path.exists(h1.path(marker))
    assert not os.path.exists(h2.path(marker))
    assert not os.path.exists(marker)  # not on the machine's (= the edge's) /tmp either
    home = os.path.expanduser("~")
    for sub in (".elearn/x", ".cache/x"):
        assert os.path.isdir(h1.path(os.path.join(home, sub)))
        assert not os.path.exists(h2.path(os.path.join(home, sub)))
        assert not os.path.exists(os.path.join(home, sub))
    # A relative path run with cwd resolves inside the host, not on the machine's disk.
    assert h1.run(["cat", "written-on-h1"], cwd="/tmp", check=True).stdout == "h1\n"


def _argv(pid: int) -> list[bytes]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0")[:-1]


def test_wait_quiet_names_what_is_left_running(cluster):
    h2 = cluster.hosts[1]
    left = h2.popen(["sleep", "60"])
    try:
        # Popen returns once nsenter is forked; it joins h2's namespaces and execs sleep a moment
        # later (long on a loaded machine), and only then is it h2's process.
        deadline = time.monotonic() + 30
        while left.pid not in h2.pids() or _argv(left.pid) != [b"sleep", b"60"]:
            assert time.monotonic() < deadline, "sleep never started inside h2"
            time.sleep(0.05)
        with pytest.raises(SimClusterError, match=r"h2: \d+: sleep 60"):
            cluster.wait_quiet(timeout=0.5)
    finally:
        left.kill()
        left.wait()
    cluster.wait_quiet(timeout=10)


def test_link_down_cuts_a_host_off_and_link_up_restores_it(cluster):
    h1, h2 = cluster.hosts[:2]
    assert cluster.edge.can_connect(h2.address, WORKER_UI_PORT)
    h2.link_down()
    try:
        t0 = time.monotonic()
        assert not cluster.edge.can_connect(h2.address, WORKER_UI_PORT, timeout=2)
        assert not h2.can_connect(cluster.edge.address, 7077, timeout=2)  # the master
        assert time.monotonic() - t0 < 10
        assert h2.can_connect(h2.address, WORKER_UI_PORT)  # the host itself still runs
    finally:
        h2.link_up()
    deadline = time.monotonic() + 20
    while not cluster.edge.can_connect(h2.address, WORKER_UI_PORT, timeout=2):
        assert time.monotonic() < deadline, f"{h2.name} still unreachable 20s after link_up"
        time.sleep(0.2)


def test_kill_all_leaves_the_holder_and_start_worker_brings_it_back(cluster):
    h3 = cluster.hosts[2]
    assert len(h3.pids()) > 1  # the holder and the Worker JVM at least
    h3.kill_all()
    assert h3.pids() == [h3.holder_pid]
    # The master sees the connection drop and stops counting the worker.
    deadline = time.monotonic() + 60
    while h3.address in {w["host"] for w in cluster.alive_workers()}:
        assert time.monotonic() < deadline, "master still lists the killed worker ALIVE after 60s"
        time.sleep(0.25)
    h3.start_worker()  # waits for a new ALIVE registration
    assert {w["host"] for w in cluster.alive_workers()} == {h.address for h in cluster.hosts}


def test_close_removes_everything(cluster):
    names = {h.netns for h in cluster.all_hosts}
    links = {cluster.bridge} | {h.veth for h in cluster.all_hosts}
    pids = [p for h in cluster.all_hosts for p in h.pids()]
    assert pids and names <= set(_list_netns()) and links <= set(_list_links())
    cluster.close()
    print(f"bring-up {cluster.bring_up_seconds:.1f}s, teardown {cluster.teardown_seconds:.1f}s")
    assert not names & set(_list_netns())
    assert not links & set(_list_links())
    assert not any(alive_pid(p) for p in pids)
    assert not _pids_with_env(CLUSTER_ENV, cluster.id)
    assert not os.path.exists(cluster.dir)


CRASHING_OWNER = r'''
import sys, time
sys.path.insert(0, sys.argv[1])
from simcluster import SimCluster
cluster = SimCluster(hosts=1, spark=False).start()
cluster.hosts[0].popen(["sleep", "600"])  # a process of a host, not the owner's child's child
print(cluster.id, flush=True)
time.sleep(600)
'''


def test_sweep_removes_a_crashed_cluster_and_spares_a_live_one():
    require()
    # An owner that dies by SIGKILL: no atexit, no teardown.
    owner = subprocess.Popen([sys.executable, "-c", CRASHING_OWNER, os.path.dirname(__file__)],
                             stdout=subprocess.PIPE, text=True)
    crashed_id = owner.stdout.readline().strip()
    assert crashed_id, "the crashing owner did not bring its cluster up"
    owner.kill()
    owner.wait()
    live = None
    try:
        # Polled: the sleep may still be exec'ing (nsenter becoming sleep), and a process mid-exec
        # shows no environment for a moment (1 run in 46 read only the two holders).
        deadline = time.monotonic() + 10
        crashed_pids = _pids_with_env(CLUSTER_ENV, crashed_id)
        while len(crashed_pids) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
            crashed_pids = _pids_with_env(CLUSTER_ENV, crashed_id)
        # Two holders and the sleep; the message tells a process that died from one not found.
        assert len(crashed_pids) >= 3, (
            f"cluster {crashed_id}: by env marker {crashed_pids}, by namespace "
            f"{_pids_in_netns({_netns_ino(f'elsim-{crashed_id}-{h}') for h in ('edge', 'h1')})}")
        # Started after the crash: its hosts begin with copies of the crashed namespaces' mounts.
        live = SimCluster(hosts=1, spark=False).start()
        with open(f"/proc/{live.edge.holder_pid}/mountinfo") as f:
            assert f"elsim-{crashed_id}" in f.read()

        removed = sweep()
        assert crashed_id in removed and live.id not in removed

        assert not any(n.startswith(f"elsim-{crashed_id}-") for n in _list_netns())
        assert not any(crashed_id in link for link in _list_links())
        assert not any(alive_pid(p) for p in crashed_pids)
        assert not os.path.exists(os.path.join(STATE_ROOT, f"elsim-{crashed_id}"))
        # The live cluster is intact, and its hosts hold no copy of the removed namespaces'
        # mounts (a copy would keep a namespace alive unseen).
        assert live.edge.run(["hostname"], check=True).stdout.strip() == "edge"
        with open(f"/proc/{live.edge.holder_pid}/mountinfo") as f:
            assert f"elsim-{crashed_id}" not in f.read()
    finally:
        if live is not None:
            live.close()
        _teardown(crashed_id)  # a no-op when sweep() did its job
