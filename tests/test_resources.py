"""Node shapes: ResourceProfiles for PS and worker executors, and GPUs for the TF processes."""
import json
import os
from types import SimpleNamespace

import pytest
from conftest import job

from elearn.config import SubmitOptions
from elearn.errors import ElearnError
from elearn.procs import free_port
from elearn.mpi import AllreduceBackend
from elearn.ps import PSBackend
from elearn.resources_profile import build_profiles, cuda_visible_devices, gpu_env, shapes
from elearn.runtime.node_task import child_env


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


def test_allreduce_shapes_every_executor_without_dynamic_allocation():
    """A barrier stage refuses dynamic allocation and so executor-level profiles: the worker's
    shape becomes the executors' and tasks' settings; the user's own --conf still wins."""
    said = []
    opts = SubmitOptions(workers=2, worker_cores=4, worker_memory="6g", worker_gpus=2, ps_memory="9g")
    conf = AllreduceBackend(2).spark_conf(opts, "k8s://https://api:6443", {"spark.executor.memory": "7g"},
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
    assert "spark.executor.cores" not in AllreduceBackend(2).spark_conf(opts, "local[2]", {}, said.append)
    assert "not applied: --master local[2]" in said[-1]
    with pytest.raises(ElearnError, match="executors of 2 cores"):
        AllreduceBackend(1).spark_conf(SubmitOptions(workers=1, worker_cores=3), "local-cluster[2,2,1024]", {})


def test_gpu_workers_get_executor_and_task_gpus_with_a_discovery_script():
    """The worker profile's resources as built by pyspark (no GPU here: the requests are checked)."""
    from pyspark import SparkConf  # a plain SparkConf and pyspark's builders need no JVM

    conf = SparkConf(loadDefaults=False).setAll([("spark.dynamicAllocation.enabled", "true"),
                                                 ("spark.executor.cores", "1")])
    opts = SubmitOptions(ps=1, workers=2, worker_cores=4, worker_gpus=2)
    profiles = build_profiles(conf.get, opts, "k8s://https://api:6443")
    assert profiles["ps"] is None
    worker = profiles["worker"]
    gpu = worker.executorResources["gpu"]
    assert gpu.amount == 2 and gpu.vendor == "nvidia.com" and gpu.discoveryScript.endswith("gpus.sh")
    assert worker.executorResources["cores"].amount == 4
    assert worker.taskResources["gpu"].amount == 2 and worker.taskResources["cpus"].amount == 4


def test_local_mode_says_once_that_profiles_are_not_applied():
    said = []
    opts = SubmitOptions(ps=1, workers=1, ps_cores=2, worker_memory="1g")
    assert build_profiles(None, opts, "local[2]", said.append) == {"ps": None, "worker": None}
    assert len(said) == 1
    assert "--ps-cores, --worker-memory not applied" in said[0] and "local[2]" in said[0]


def test_ps_and_worker_tasks_run_on_executors_of_the_requested_shapes(pl_submit, tmp_path):
    """Local-cluster with dynamic allocation: executors are observed through Spark's REST API."""
    out, ui = tmp_path / "shapes.jsonl", free_port()
    run = pl_submit(job("shapes.py"), "--ps", 1, "--workers", 2,
                    "--master", "local-cluster[4,2,1536]", "--app-name", "shapes-test",
                    "--ps-cores", 1, "--ps-memory", "1g", "--worker-cores", 2, "--worker-memory", "512m",
                    # 2-core default executors (for pre_train's shuffle) fill whole local-cluster
                    # workers, so single-core ones cannot strand the 2-core worker executors.
                    "--conf", "spark.executor.cores=2", "--conf", "spark.executor.memory=512m",
                    "--conf", f"spark.ui.port={ui}", "--conf", "spark.port.maxRetries=0",
                    "--register-timeout", 400, "--arg", f"out={out}", "--arg", f"ui={ui}",
                    timeout=600)
    try:
        assert run.returncode == 0, run.output[-4000:]
        (seen,) = [json.loads(line) for line in out.read_text().splitlines()]
        execs, roles = seen["executors"], seen["roles"]
        assert len(roles["ps"]) == 1 and len(roles["worker"]) == 2, seen
        ps_exec = execs[roles["ps"][0]]
        worker_execs = [execs[e] for e in roles["worker"]]
        assert ps_exec["cores"] == 1
        assert all(e["cores"] == 2 for e in worker_execs), seen
        assert len(set(roles["worker"])) == 2  # one worker per 2-core executor
        # Storage memory is a fixed share of the heap: the 1g PS executor has more than the 512m ones.
        assert all(ps_exec["max_memory"] > e["max_memory"] for e in worker_execs), seen
        profiles = {ps_exec["profile"]} | {e["profile"] for e in worker_execs}
        assert len(profiles) == 2 and 0 not in profiles, seen  # two non-default profiles
        assert "executor shapes: ps 1 cores, 1g; worker 2 cores, 512m" in run.output
    finally:
        _remove_executor_dirs("shapes-test")


def _remove_executor_dirs(app_name):
    """local-cluster leaves executors' directories in SPARK_HOME/work; remove this test's."""
    import glob
    import shutil

    import pyspark

    work = os.path.join(os.path.dirname(pyspark.__file__), "work")
    for node_dir in glob.glob(os.path.join(work, "app-*", "*", "elearn", app_name)):
        shutil.rmtree(node_dir.split(os.sep + "elearn" + os.sep)[0].rsplit(os.sep, 1)[0],
                      ignore_errors=True)


def test_task_wider_than_executors_is_refused_when_dynamic_allocation_is_off():
    from pyspark import SparkConf  # a plain SparkConf needs no JVM

    conf = SparkConf(loadDefaults=False).setAll([("spark.dynamicAllocation.enabled", "false"),
                                                 ("spark.executor.cores", "1")])
    with pytest.raises(ElearnError, match="--conf spark.executor.cores=2"):
        build_profiles(conf.get, SubmitOptions(ps=1, worker_cores=2), "spark://h:7077")
