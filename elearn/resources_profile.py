"""Executor shapes for PS and worker nodes (Spark ResourceProfiles) and GPUs for TF processes.

``--ps-cores/--ps-memory`` shape the PS job's executors and ``--worker-cores/--worker-memory/
--worker-gpus`` the worker job's: each becomes one ``ResourceProfile`` attached to that job's
stage, so memory-heavy PS and compute- or GPU-heavy workers run on different executors::

    pl_submit job.py --master yarn --ps 2 --workers 8 \\
        --ps-cores 2 --ps-memory 16g --worker-cores 8 --worker-memory 8g --worker-gpus 1

Executor-level profiles need dynamic allocation (YARN, Kubernetes, standalone); elearn turns it on
with shuffle tracking unless ``--conf spark.dynamicAllocation.enabled=false`` says otherwise, in
which case only the task's cpus and GPUs apply. ``local[K]`` refuses profiles: they are not
applied there, and elearn says so once.

A task's GPUs reach its TF process as ``CUDA_VISIBLE_DEVICES`` (``task_gpu_env``), so a TF
process sees only the devices Spark assigned to its task.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from elearn.errors import ElearnError

GPU = "gpu"
_MEMORY = re.compile(r"\d+[kmgt]?b?", re.IGNORECASE)
DISCOVERY_CONF = "spark.executor.resource.gpu.discoveryScript"


@dataclass(frozen=True)
class NodeShape:
    """What one PS or worker node asks of its executor; ``None`` fields keep Spark's defaults."""

    cores: int | None = None
    memory: str | None = None
    gpus: int | None = None

    @property
    def requested(self) -> bool:
        return any(v is not None for v in (self.cores, self.memory, self.gpus))


def shapes(opts) -> dict[str, NodeShape]:
    """``{"ps": NodeShape, "worker": NodeShape}`` from the submit options, validated."""
    out = {"ps": NodeShape(opts.ps_cores, opts.ps_memory, None),
           "worker": NodeShape(opts.worker_cores, opts.worker_memory, opts.worker_gpus)}
    for role, shape in out.items():
        if shape.cores is not None and (not isinstance(shape.cores, int) or shape.cores < 1):
            raise ElearnError(f"--{role}-cores must be a whole number of at least 1, got {shape.cores!r}")
        if shape.memory is not None and not _MEMORY.fullmatch(str(shape.memory)):
            raise ElearnError(f"--{role}-memory {shape.memory!r}: use a JVM size such as 4g or 512m")
        if shape.gpus is not None and (not isinstance(shape.gpus, int) or shape.gpus < 0):
            raise ElearnError(f"--{role}-gpus must be a whole number of 0 or more, got {shape.gpus!r}")
    return out


def profiles_requested(opts) -> bool:
    return any(s.requested for s in shapes(opts).values())


def supports_profiles(master: str) -> bool:
    """Whether the cluster manager behind ``master`` accepts stage-level ResourceProfiles."""
    return not (master.startswith("local") and not master.startswith("local-cluster"))


def dynamic_allocation(conf: dict) -> bool:
    return str(conf.get("spark.dynamicAllocation.enabled", "false")).lower() == "true"


def ps_conf(opts, master: str, conf: dict, say=None) -> dict:
    """PS mode: the Spark settings the requested shapes need, merged over ``conf`` (user settings
    win). PS mode runs two ordinary jobs, so executor-level profiles with dynamic allocation work;
    where the master cannot apply profiles, ``build_profiles`` says so when it builds them."""
    out = dict(conf)
    if profiles_requested(opts) and supports_profiles(master) and "spark.dynamicAllocation.enabled" not in out:
        out["spark.dynamicAllocation.enabled"] = "true"
        out.setdefault("spark.dynamicAllocation.shuffleTracking.enabled", "true")
    return out


def allreduce_conf(opts, master: str, conf: dict, say=None) -> dict:
    """Allreduce mode: ``--worker-*`` as executor and task settings, merged under ``conf``.

    One barrier stage runs the workers, and Spark refuses barrier stages under dynamic allocation
    (and so executor-level profiles): every executor serves workers, so the worker's shape is the
    application's executor shape, one worker task per executor with all its cores (TF uses them)
    and its GPUs. ``say`` reports what was applied.
    """
    if not supports_profiles(master):
        if profiles_requested(opts) and say is not None:
            say(f"--worker-cores/--worker-memory/--worker-gpus not applied: --master {master} runs "
                "every task in this process")
        return dict(conf)
    worker = shapes(opts)["worker"]
    wanted = {}
    if worker.cores:
        wanted["spark.executor.cores"] = wanted["spark.task.cpus"] = str(worker.cores)
    if worker.memory:
        wanted["spark.executor.memory"] = str(worker.memory)
    if worker.gpus:
        wanted["spark.executor.resource.gpu.amount"] = wanted["spark.task.resource.gpu.amount"] = \
            str(worker.gpus)
        wanted[DISCOVERY_CONF] = discovery_script(conf)
        if master.startswith("k8s://"):
            wanted.setdefault("spark.executor.resource.gpu.vendor", "nvidia.com")
    m = re.match(r"local-cluster\[\s*\d+\s*,\s*(\d+)", master)
    if m and worker.cores and worker.cores > int(m.group(1)):
        raise ElearnError(f"--worker-cores {worker.cores}: --master {master} has executors of "
                          f"{m.group(1)} cores, so a {worker.cores}-cpu task would never start")
    out = {**wanted, **conf}
    applied = {k: out[k] for k in wanted}
    if say is not None and applied:
        say("allreduce mode: worker shape applied to every executor ("
            + ", ".join(f"{k}={v}" for k, v in applied.items() if k != DISCOVERY_CONF) + ")"
            + ("; --ps-cores/--ps-memory have no PS to shape" if opts.ps_cores or opts.ps_memory else ""))
    return out


def discovery_script(conf: dict) -> str:
    """The GPU discovery script: ``--conf spark.executor.resource.gpu.discoveryScript``, else
    elearn's own (``nvidia-smi`` based), which executors must reach at the same path."""
    return conf.get(DISCOVERY_CONF) or os.path.join(os.path.dirname(__file__), "resources", "gpus.sh")


def build_profiles(conf_get, opts, master: str, say=lambda msg: None) -> dict:
    """``{"ps": ResourceProfile | None, "worker": ResourceProfile | None}`` for this cluster;
    ``conf_get(key, default)`` reads the running application's settings.

    Returns no profiles (and says why, once) where the master cannot apply them.
    """
    wanted = shapes(opts)
    none = {"ps": None, "worker": None}
    if not any(s.requested for s in wanted.values()):
        return none
    if not supports_profiles(master):
        flags = [f"--{r}-{k}" for r, s in wanted.items() for k in ("cores", "memory", "gpus")
                 if getattr(s, k) is not None]
        say(f"{', '.join(flags)} not applied: --master {master} runs every task in this process "
            "and Spark refuses ResourceProfiles there")
        return none
    from pyspark.resource import (ExecutorResourceRequests, ResourceProfileBuilder,
                                  TaskResourceRequests)

    executor_level = (conf_get("spark.dynamicAllocation.enabled", "false") or "false").lower() == "true"
    default_cores = int(conf_get("spark.executor.cores", "1") or 1)
    vendor = "nvidia.com" if master.startswith("k8s://") else ""
    out = dict(none)
    for role, shape in wanted.items():
        if not shape.requested:
            continue
        cores = shape.cores or default_cores
        # One node per executor: the task takes all its executor's cores, and TF uses them.
        task = TaskResourceRequests().cpus(cores)
        builder = ResourceProfileBuilder()
        if executor_level:
            ex = ExecutorResourceRequests().cores(cores)
            if shape.memory:
                ex = ex.memory(str(shape.memory))
            if shape.gpus:
                ex = ex.resource(GPU, shape.gpus, discovery_script(
                    {DISCOVERY_CONF: conf_get(DISCOVERY_CONF, None)} if conf_get(DISCOVERY_CONF, None) else {}),
                    vendor)
            builder.require(ex)
        elif cores > default_cores:
            raise ElearnError(
                f"--{role}-cores {cores}: with dynamic allocation off, tasks run on executors of "
                f"spark.executor.cores={default_cores}, so a {cores}-cpu task would never start. "
                f"Set --conf spark.executor.cores={cores} or turn dynamic allocation on.")
        elif shape.memory or shape.cores:
            say(f"--{role}-cores/--{role}-memory shape executors only with dynamic allocation; "
                "with it off, only the task's cpus and GPUs apply")
        if shape.gpus:
            task = task.resource(GPU, shape.gpus)
        builder.require(task)
        out[role] = builder.build
    say("executor shapes: " + "; ".join(
        f"{r} {s.cores or default_cores} cores" + (f", {s.memory}" if s.memory else "")
        + (f", {s.gpus} GPU" if s.gpus else "") for r, s in wanted.items() if s.requested))
    return out


# -- GPUs for the TF process ----------------------------------------------------------------------

def cuda_visible_devices(addresses) -> str:
    """``CUDA_VISIBLE_DEVICES`` for GPU addresses Spark assigned to a task (``["1", "0"]`` -> ``"0,1"``).

    Numeric addresses are ordered numerically; others (GPU UUIDs) keep their order.
    """
    addrs = [str(a).strip() for a in addresses]
    for a in addrs:
        if not a or "," in a:
            raise ElearnError(f"GPU address {a!r} from Spark's resource discovery is not a device "
                              "index or UUID; check the discovery script's output")
    if all(a.isdigit() for a in addrs):
        addrs = sorted(set(addrs), key=int)
    return ",".join(addrs)


def gpu_env(resources: dict | None) -> dict:
    """The child-process environment for a task's ``resources()``; ``{}`` when it has no GPUs.

    ``resources`` maps resource names to objects with ``.addresses`` (Spark's ResourceInformation)
    or to address lists.
    """
    info = (resources or {}).get(GPU)
    if info is None:
        return {}
    addrs = getattr(info, "addresses", info)
    if not addrs:
        return {}
    return {"CUDA_VISIBLE_DEVICES": cuda_visible_devices(addrs)}


def task_gpu_env() -> dict:
    """``gpu_env`` of the running Spark task (plain or barrier); ``{}`` outside a task.

    Call it in the task, before starting a TF child: ``env.update(task_gpu_env())``.
    """
    try:
        from pyspark import TaskContext
    except ImportError:
        return {}
    ctx = TaskContext.get()
    if ctx is None:
        return {}
    return gpu_env(ctx.resources())


__all__ = ["NodeShape", "shapes", "build_profiles", "ps_conf", "allreduce_conf", "cuda_visible_devices",
           "gpu_env", "task_gpu_env", "supports_profiles"]
