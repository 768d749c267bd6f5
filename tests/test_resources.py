"""Node shapes: ResourceProfiles for PS and worker executors, and GPUs for the TF processes."""
import json
import os
import time
from types import SimpleNamespace

import pytest
from conftest import job

from elearn.driver.options import SubmitOptions
from elearn.errors import ElearnError
from elearn.cluster.procs import free_port
from elearn.mpi import AllreduceBackend
from elearn.ps import PSBackend
from elearn.driver.shapes import build_profiles, check_shapes_fit, shapes
from elearn.runtime.gpus import cuda_visible_devices, gpu_env
from elearn.runtime.node_task import child_env

HEARTBEAT = SubmitOptions().heartbeat_timeout  # --heartbeat-timeout's default


# -- GPUs: no GPU on this machine, so the mapping from Spark's assigned addresses is tested alone --

def test_assigned_gpu_addresses_become_cuda_visible_devices():
    assert cuda_visible_devices(["3", "1"]) == "1,3"
    assert cuda_visible_devices(["10", "2", "2"]) == "2,10"
    assert cuda_visible_devices(["GPU-b1", "GPU-a0"]) == "GPU-b1,GPU-a0"  # UUIDs keep Spark's order
    info = SimpleNamespace(name="gpu", addresses=["1", "0"])  # Spark's ResourceInformation shape
    assert gpu_env({"gpu": info}) == {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert gpu_env({}) == {} and gpu_env(None) == {} and gpu_env({"gpu": []}) == {}
    with pytest.raises(ElearnError, match="discovery script"):
        cuda_visible_devices(["0,1"])


def test_tf_child_environment_outside_a_task_hides_gpus():
    # No Spark task here: the child gets no GPU unless the executor's environment gave it some.
    env = child_env(tf_log=False)
    assert env["CUDA_VISIBLE_DEVICES"] == os.environ.get("CUDA_VISIBLE_DEVICES", "")


# -- profiles -------------------------------------------------------------------------------------

def test_shapes_are_validated_with_the_flag_named():
    with pytest.raises(ElearnError, match="--ps-memory 'lots'"):
        shapes(SubmitOptions(ps=1, ps_memory="lots"))
    with pytest.raises(ElearnError, match="--worker-cores must be"):
        shapes(SubmitOptions(ps=1, worker_cores=0))
    got = shapes(SubmitOptions(ps=1, ps_memory="2g", worker_cores=4, worker_gpus=1))
    assert got["ps"].memory == "2g" and got["worker"].gpus == 1 and got["worker"].cores == 4


def test_dynamic_allocation_is_turned_on_only_where_profiles_apply():
    opts = SubmitOptions(ps=1, workers=2, ps_memory="2g")
    conf = PSBackend(1).spark_conf(opts, "yarn", {})
    assert conf["spark.dynamicAllocation.enabled"] == "true"
    assert conf["spark.dynamicAllocation.shuffleTracking.enabled"] == "true"
    assert PSBackend(1).spark_conf(opts, "yarn", {"spark.dynamicAllocation.enabled": "false"}) == {
        "spark.dynamicAllocation.enabled": "false"}  # the user's choice wins
    assert PSBackend(1).spark_conf(opts, "local[4]", {}) == {}
    assert PSBackend(1).spark_conf(SubmitOptions(ps=1), "yarn", {}) == {}
    # The default executors (the workers') leave room for the PS profile's: as many as they run.
    assert conf["spark.dynamicAllocation.initialExecutors"] == conf["spark.dynamicAllocation.maxExecutors"] == "2"
    unshaped_ps = PSBackend(1).spark_conf(SubmitOptions(ps=1, workers=2, worker_memory="2g"), "yarn", {})
    assert unshaped_ps["spark.dynamicAllocation.initialExecutors"] == "3"  # the PS runs on them too
    assert unshaped_ps["spark.executor.memory"] == "2g" and "spark.task.cpus" not in unshaped_ps


def test_allreduce_shapes_every_executor_without_dynamic_allocation():
    """A barrier stage refuses dynamic allocation and so executor-level profiles: the worker's
    shape becomes the executors' and tasks' settings; the user's own --conf still wins."""
    said = []
    opts = SubmitOptions(workers=2, worker_cores=4, worker_memory="6g", worker_gpus=2, ps_memory="9g")
    conf = AllreduceBackend(2, HEARTBEAT).spark_conf(opts, "k8s://https://api:6443", {"spark.executor.memory": "7g"},
                                          said.append)
    assert "spark.dynamicAllocation.enabled" not in conf
    assert conf["spark.executor.cores"] == conf["spark.task.cpus"] == "4"
    assert conf["spark.executor.memory"] == "7g"  # --conf wins over --worker-memory
    assert conf["spark.executor.resource.gpu.amount"] == conf["spark.task.resource.gpu.amount"] == "2"
    assert conf["spark.executor.resource.gpu.vendor"] == "nvidia.com"
    assert conf["spark.executor.resource.gpu.discoveryScript"].endswith("resources/gpus.sh")
    assert os.access(conf["spark.executor.resource.gpu.discoveryScript"], os.X_OK)
    (line,) = said
    assert "spark.executor.cores=4" in line and "spark.executor.memory=7g" in line
    assert "--ps-cores/--ps-memory have no PS to shape" in line
    assert "spark.executor.cores" not in AllreduceBackend(2, HEARTBEAT).spark_conf(opts, "local[2]", {}, said.append)
    assert "not applied: --master local[2]" in said[-1]
    with pytest.raises(ElearnError, match=r"--worker-cores 3: no worker of --master local-cluster\[2,2,1024\] "
                                          r"can hold an executor of 3 cores and 1024 MB; its workers offer "
                                          r"2 x \(2 cores, 1024 MB\)"):
        check_shapes_fit(SubmitOptions(workers=1, worker_cores=3), "local-cluster[2,2,1024]", {})


def test_gpu_workers_get_executor_and_task_gpus_with_a_discovery_script():
    """The worker shape is the application's executors': GPUs for them and their tasks, and a
    PS profile only when the PS is shaped (no GPU here: the requests are checked)."""
    from pyspark import SparkConf  # a plain SparkConf and pyspark's builders need no JVM

    opts = SubmitOptions(ps=1, workers=2, worker_cores=4, worker_gpus=2, ps_cores=2, ps_memory="8g")
    conf = PSBackend(1).spark_conf(opts, "k8s://https://api:6443", {})
    assert conf["spark.executor.resource.gpu.amount"] == conf["spark.task.resource.gpu.amount"] == "2"
    assert conf["spark.executor.resource.gpu.vendor"] == "nvidia.com"
    assert conf["spark.executor.resource.gpu.discoveryScript"].endswith("gpus.sh")
    assert conf["spark.executor.cores"] == "4"
    spark_conf = SparkConf(loadDefaults=False).setAll(list(conf.items()))
    ps = build_profiles(spark_conf.get, opts, "k8s://https://api:6443")["ps"]
    assert ps.executorResources["cores"].amount == 2 and ps.executorResources["memory"].amount == 8192
    assert "gpu" not in ps.executorResources and ps.taskResources["cpus"].amount == 2
    assert build_profiles(spark_conf.get, SubmitOptions(ps=1, workers=2, worker_gpus=2),
                          "k8s://https://api:6443") == {"ps": None}


def test_local_mode_says_once_that_profiles_are_not_applied():
    said = []
    opts = SubmitOptions(ps=1, workers=1, ps_cores=2, worker_memory="1g")
    assert build_profiles(None, opts, "local[2]", said.append) == {"ps": None}
    assert len(said) == 1
    assert "--ps-cores, --worker-memory not applied" in said[0] and "local[2]" in said[0]


SHAPES = ["--ps", 1, "--workers", 2, "--ps-memory", "1g", "--worker-memory", "1500m"]


def check_shapes(out):
    """The PS ran on an executor of the PS profile, each worker on its own executor of the
    worker shape (the application's default profile), read back from Spark's REST API."""
    (seen,) = [json.loads(line) for line in out.read_text().splitlines()]
    execs, roles = seen["executors"], seen["roles"]
    assert len(roles["ps"]) == 1 and len(roles["worker"]) == 2, seen
    ps_exec = execs[roles["ps"][0]]
    worker_execs = [execs[e] for e in roles["worker"]]
    assert ps_exec["profile"] != 0 and all(e["profile"] == 0 for e in worker_execs), seen
    assert len(set(roles["worker"])) == 2, seen
    # Storage memory is a fixed share of the heap: the 1500m worker executors have more than the 1g PS.
    assert all(e["max_memory"] > ps_exec["max_memory"] for e in worker_execs), seen
    return seen


def test_shapes_are_granted_on_a_cluster_with_no_room_to_spare(pl_submit, tmp_path):
    """local-cluster[3,1,2048]: three 1-core workers for three nodes. pre_train's join and
    aggregation and the feed's shuffle run first; the executors they used must not strand the
    nodes' shapes."""
    out, ui = tmp_path / "shapes.jsonl", free_port()
    run = pl_submit(job("shapes.py"), *SHAPES, "--master", "local-cluster[3,1,2048]", "--app-name", "shapes-full",
                    "--conf", f"spark.ui.port={ui}", "--conf", "spark.port.maxRetries=0",
                    "--register-timeout", 300, "--arg", f"out={out}", "--arg", f"ui={ui}", timeout=900)
    try:
        assert run.returncode == 0, run.output[-4000:]
        check_shapes(out)
        assert "executor shapes: ps 1 cores, 1g; worker 1 cores, 1500m" in run.output
    finally:
        _remove_executor_dirs("shapes-full")


def test_a_shape_no_worker_can_hold_fails_at_once_naming_the_largest_offer(pl_submit):
    t0 = time.monotonic()
    run = pl_submit(job("linear_fit.py"), "--ps", 1, "--workers", 2, "--worker-memory", "4g",
                    "--master", "local-cluster[3,1,2048]", "--register-timeout", 60, timeout=300)
    assert run.returncode == 2  # refused before anything starts, like a bad flag
    assert "--worker-memory 4g" in run.stderr and "2048 MB" in run.stderr, run.output[-3000:]
    assert time.monotonic() - t0 < 120


GPU_DISCOVERY = """#!/bin/sh
# A fake GPU discovery script, as Spark's own tests use: each executor that runs it gets the next
# device index, so every executor of the application has a GPU of its own.
exec 9>>"{counter}.lock"
flock 9
n=$(cat "{counter}" 2>/dev/null || echo 0)
echo $((n + 1)) > "{counter}"
echo '{{"name": "gpu", "addresses": ["'$n'"]}}'
"""


@pytest.mark.slow
def test_each_gpu_worker_process_sees_the_device_spark_assigned_to_its_task(pl_submit, tmp_path):
    script = tmp_path / "gpus.sh"
    script.write_text(GPU_DISCOVERY.format(counter=tmp_path / "gpu-counter"))
    script.chmod(0o755)
    out = tmp_path / "devices.jsonl"
    run = pl_submit(job("gpu_devices.py"), "--ps", 1, "--workers", 2, "--worker-gpus", 1,
                    "--master", "local-cluster[3,1,1536]", "--app-name", "gpus",
                    # The cluster's workers advertise one GPU each (a real cluster's workers are
                    # configured so); each executor gets the one of its worker.
                    "--conf", "spark.worker.resource.gpu.amount=1",
                    "--conf", f"spark.worker.resource.gpu.discoveryScript={script}",
                    "--conf", f"spark.executor.resource.gpu.discoveryScript={script}",
                    "--register-timeout", 300, "--arg", f"out={out}", timeout=900)
    try:
        assert run.returncode == 0, run.output[-4000:]
        (seen,) = [json.loads(line) for line in out.read_text().splitlines()]
        devices = seen["workers"]
        assert len(devices) == 2 and len(set(devices)) == 2 and all(d.isdigit() for d in devices), seen
    finally:
        _remove_executor_dirs("gpus")


def _remove_executor_dirs(app_name):
    """local-cluster leaves executors' directories in SPARK_HOME/work; remove this test's."""
    import glob
    import shutil

    import pyspark

    work = os.path.join(os.path.dirname(pyspark.__file__), "work")
    for node_dir in glob.glob(os.path.join(work, "app-*", "*", "elearn-nodes", app_name)):
        shutil.rmtree(node_dir.split(os.sep + "elearn-nodes" + os.sep)[0].rsplit(os.sep, 1)[0],
                      ignore_errors=True)


def test_task_wider_than_executors_is_refused_when_dynamic_allocation_is_off():
    from pyspark import SparkConf  # a plain SparkConf needs no JVM

    conf = SparkConf(loadDefaults=False).setAll([("spark.dynamicAllocation.enabled", "false"),
                                                 ("spark.executor.cores", "1")])
    with pytest.raises(ElearnError, match="--conf spark.executor.cores=2"):
        build_profiles(conf.get, SubmitOptions(ps=1, ps_cores=2), "spark://h:7077")
