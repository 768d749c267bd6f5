"""Executor shapes on a simulated cluster with no room to spare: three 1-core, 2 GB worker hosts
for a PS and two workers, each host its own disk and network (tests/simcluster.py)."""
import json
import os
import uuid

import pytest
from cluster_runs import submit_on
from conftest import job
from simcluster import SimCluster, require, sweep
from test_resources import SHAPES, check_shapes

from elearn.cluster.procs import free_port

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def cluster():
    require()
    sweep()
    with SimCluster(hosts=3, cores=1, memory="2g", env={"ELEARN_TEST_TAG": uuid.uuid4().hex}) as c:
        yield c
        c.wait_quiet(timeout=90)


def test_every_node_gets_its_shape_on_a_full_cluster_after_joins_and_aggregations(cluster, tmp_path):
    out, ui = tmp_path / "shapes.jsonl", free_port()
    run = submit_on(cluster.edge, [job("shapes.py"), *SHAPES, "--master", cluster.master_url,
                                   "--app-name", "mh-shapes", "--conf", f"spark.ui.port={ui}",
                                   "--conf", "spark.port.maxRetries=0", "--register-timeout", 400,
                                   "--arg", f"out={out}", "--arg", f"ui={ui}"], str(tmp_path / "home"))
    assert run.returncode == 0, run.output[-4000:]
    seen = check_shapes(out)
    hosts = {seen["executors"][e]["host"] for role in ("ps", "worker") for e in seen["roles"][role]}
    assert len(hosts) == 3, seen  # one node per host: there is no other room
    with open(os.path.join(run.app_dir("mh-shapes"), "summary.json")) as f:
        phases = json.load(f)["phases"]
    assert phases["teardown"] < 15, phases


def test_a_shape_no_host_can_hold_is_refused_naming_the_largest_offer(cluster, tmp_path):
    run = submit_on(cluster.edge, [job("linear_fit.py"), "--ps", 1, "--workers", 2, "--worker-memory", "3g",
                                   "--master", cluster.master_url, "--register-timeout", 60],
                    str(tmp_path / "home"), timeout=300)
    assert run.returncode == 2  # refused before anything starts, like a bad flag
    assert "--worker-memory 3g" in run.stderr and "3 x (1 cores, 2048 MB)" in run.stderr, run.output[-3000:]


def test_waiting_for_room_that_never_comes_is_registration_and_teardown_stays_short(cluster, tmp_path):
    """Four nodes for three 1-core hosts: the registration wait times out, names the shape that got
    no executor, and counts as ``register``; tearing down what did start takes seconds."""
    run = submit_on(cluster.edge, [job("linear_fit.py"), "--ps", 2, "--workers", 2, "--ps-memory", "1g",
                                   "--master", cluster.master_url, "--register-timeout", 25,
                                   "--app-name", "mh-noroom"], str(tmp_path / "home"), timeout=600)
    assert run.returncode == 1
    assert "was granted" in run.stderr and "3 x (1 cores, 2048 MB)" in run.stderr, run.output[-3000:]
    with open(os.path.join(run.app_dir("mh-noroom"), "summary.json")) as f:
        phases = json.load(f)["phases"]
    print("phases after a failed registration:", phases)
    assert phases["register"] >= 25 and phases["teardown"] < 10, phases
