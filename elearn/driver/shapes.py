"""Executor shapes for PS and worker nodes.

``--worker-cores/--worker-memory/--worker-gpus`` are the application's executor shape (its default
ResourceProfile), in both modes: the workers, the features' ETL and the feed all run on those
executors, so the feed's shuffle output already sits on the executors the worker nodes run on and
nothing of an earlier stage holds cluster room the workers would need. ``--ps-cores/--ps-memory``
shape one extra ResourceProfile, the PS job's: memory-heavy parameter servers on executors of their
own::

    pl_submit job.py --master yarn --ps 2 --workers 8 \\
        --ps-cores 2 --ps-memory 16g --worker-cores 8 --worker-memory 8g --worker-gpus 1

Why not a profile for the workers too, as before: a stage's profile covers only that stage, so the
features' ETL stages would run on default executors whose shuffle output the worker stage reads.
With dynamic allocation's shuffle tracking those executors stay allocated while their output may be
needed, and on a cluster with no spare room the worker-shaped executors then never start (seen
with three nodes on ``local-cluster[3,1,2048]``: the PS registered, the workers waited out the
timeout). Executor-level profiles need dynamic allocation (YARN, Kubernetes, standalone): elearn
turns it on with shuffle tracking unless ``--conf spark.dynamicAllocation.enabled=false`` says
otherwise, and sizes it so the default executors leave room for the PS ones: as many as the nodes
they run (``initialExecutors``), never more (``maxExecutors``, which Spark applies per profile);
your own ``--conf`` wins, e.g. to give a large ETL more executors on a roomy cluster.

Allreduce mode runs one barrier stage, which Spark refuses under dynamic allocation: there the
worker shape is applied the same way, with each task taking all of its executor's cores.
``local[K]`` applies no shapes, and elearn says so once.

With ``--worker-gpus`` every task of the application asks for the GPUs, the features' ETL
included; each task's GPUs reach its TF process as ``CUDA_VISIBLE_DEVICES``
(``elearn.runtime.gpus``).
"""
from __future__ import annotations

import json
import os
import re
import urllib.request
from dataclasses import dataclass

from elearn.errors import ElearnError

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


def ps_conf(opts, master: str, conf: dict, say=None) -> dict:
    """PS mode: the worker shape as the application's executors, and dynamic allocation sized so
    that the PS profile's executors find room; merged under ``conf`` (user settings win)."""
    if not supports_profiles(master) or not profiles_requested(opts):
        return dict(conf)
    wanted = worker_executor_conf(opts, master, conf, task_cpus=False)
    if str(conf.get("spark.dynamicAllocation.enabled", "true")).lower() == "true":
        # The default profile runs the workers (and the PS, when it has no shape of its own).
        nodes = opts.workers + (0 if shapes(opts)["ps"].requested else opts.ps)
        wanted.update({"spark.dynamicAllocation.enabled": "true",
                       "spark.dynamicAllocation.shuffleTracking.enabled": "true",
                       "spark.dynamicAllocation.initialExecutors": str(nodes),
                       "spark.dynamicAllocation.maxExecutors": str(max(nodes, opts.ps))})
    return {**wanted, **conf}


def worker_executor_conf(opts, master: str, conf: dict, task_cpus: bool) -> dict:
    """``--worker-*`` as the application's executor settings (and the tasks' GPUs; their cpus too
    with ``task_cpus``: one task per executor, with all its cores)."""
    worker = shapes(opts)["worker"]
    wanted = {}
    if worker.cores:
        wanted["spark.executor.cores"] = str(worker.cores)
        if task_cpus:
            wanted["spark.task.cpus"] = str(worker.cores)
    if worker.memory:
        wanted["spark.executor.memory"] = str(worker.memory)
    if worker.gpus:
        wanted["spark.executor.resource.gpu.amount"] = wanted["spark.task.resource.gpu.amount"] = \
            str(worker.gpus)
        wanted[DISCOVERY_CONF] = discovery_script(conf)
        if master.startswith("k8s://"):
            wanted.setdefault("spark.executor.resource.gpu.vendor", "nvidia.com")
    return wanted


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
    wanted = worker_executor_conf(opts, master, conf, task_cpus=True)
    out = {**wanted, **conf}
    applied = {k: out[k] for k in wanted}
    if say is not None and applied:
        say("allreduce mode: worker shape applied to every executor ("
            + ", ".join(f"{k}={v}" for k, v in applied.items() if k != DISCOVERY_CONF) + ")"
            + ("; --ps-cores/--ps-memory have no PS to shape" if opts.ps_cores or opts.ps_memory else ""))
    return out


# -- will the cluster hold the shapes ----------------------------------------------------------------

def memory_mb(size: str) -> int:
    """A JVM size (``1500m``, ``4g``, ``512``: MiB) in MiB."""
    m = re.fullmatch(r"(\d+)([kmgt]?)b?", str(size).strip().lower())
    if not m:
        raise ElearnError(f"{size!r} is not a JVM size such as 4g or 512m")
    n, unit = int(m.group(1)), m.group(2) or "m"
    return {"k": n // 1024, "m": n, "g": n * 1024, "t": n * 1024 * 1024}[unit]


def cluster_offers(master: str, timeout: float = 3.0) -> list | None:
    """``[(cores, memory MiB), ...]``, one per worker of the cluster, where the master says it:
    ``local-cluster[N,C,MB]`` by its name, a standalone master by its web UI's JSON. None when unknown."""
    m = re.fullmatch(r"local-cluster\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]", master)
    if m:
        return [(int(m.group(2)), int(m.group(3)))] * int(m.group(1))
    if master.startswith("spark://") and "," not in master:
        host = master[len("spark://"):].rsplit(":", 1)[0]
        try:
            with urllib.request.urlopen(f"http://{host}:8080/json/", timeout=timeout) as r:
                workers = json.load(r).get("workers", [])
        except (OSError, ValueError):
            return None
        return [(w["cores"], w["memory"]) for w in workers if w.get("state") == "ALIVE"] or None
    return None


def describe_offers(offers: list) -> str:
    counts: dict = {}
    for offer in offers:
        counts[offer] = counts.get(offer, 0) + 1
    return ", ".join(f"{n} x ({c} cores, {mb} MB)" for (c, mb), n in sorted(counts.items()))


def check_shapes_fit(opts, master: str, conf: dict) -> None:
    """Refuse, before Spark starts, a shape no worker of the cluster can hold."""
    offers = cluster_offers(master)
    if not offers or not profiles_requested(opts):
        return
    default_memory = conf.get("spark.executor.memory", "1g")
    for role, shape in shapes(opts).items():
        if role == "ps" and not shape.requested:
            continue
        cores = shape.cores or int(conf.get("spark.executor.cores", 1))
        memory = memory_mb(shape.memory or default_memory)
        if not any(c >= cores and mb >= memory for c, mb in offers):
            flags = " ".join(f"--{role}-{k} {v}" for k, v in (("cores", shape.cores), ("memory", shape.memory))
                             if v is not None)
            raise ElearnError(
                f"{flags or f'the {role} executors'}: no worker of --master {master} can hold an executor "
                f"of {cores} cores and {memory} MB; its workers offer {describe_offers(offers)}. Ask "
                "for less, or use bigger workers.")


def check_shape_support(opts, can_shape: bool, client_version: str) -> None:
    """Refuse PS shape flags a session cannot apply: a PS shape is a ResourceProfile on the PS
    node job, which a Spark Connect client before 4.0 cannot attach (no ``mapInArrow(profile=)``
    and no ``.rdd``). Classic sessions of any supported version can."""
    ps = shapes(opts)["ps"]
    if can_shape or not ps.requested:
        return
    flags = ", ".join(f"--ps-{k}" for k in ("cores", "memory", "gpus") if getattr(ps, k) is not None)
    raise ElearnError(
        f"{flags} need Spark 4.0 or newer over Spark Connect (DataFrame.mapInArrow(profile=...)); this "
        f"client is pyspark {client_version}. Run without --remote (a classic Spark 3.5 session applies "
        "them), or use pyspark 4.0+.")


def discovery_script(conf: dict) -> str:
    """The GPU discovery script: ``--conf spark.executor.resource.gpu.discoveryScript``, else
    elearn's own (``nvidia-smi`` based), which executors must reach at the same path."""
    return conf.get(DISCOVERY_CONF) or os.path.join(os.path.dirname(__file__), "resources", "gpus.sh")


def build_profiles(conf_get, opts, master: str, say=lambda msg: None) -> dict:
    """``{"ps": ResourceProfile | None}``: the PS job's executor shape (the workers use the
    application's, see the module's docstring); ``conf_get(key, default)`` reads the running
    application's settings. Says what applies, once.
    """
    wanted = shapes(opts)
    none = {"ps": None}
    if not any(s.requested for s in wanted.values()):
        return none
    if not supports_profiles(master):
        flags = [f"--{r}-{k}" for r, s in wanted.items() for k in ("cores", "memory", "gpus")
                 if getattr(s, k) is not None]
        say(f"{', '.join(flags)} not applied: --master {master} runs every task in this process "
            "and Spark refuses ResourceProfiles there")
        return none
    default_cores = int(conf_get("spark.executor.cores", "1") or 1)
    say("executor shapes: " + "; ".join(
        f"{r} {s.cores or default_cores} cores" + (f", {s.memory}" if s.memory else "")
        + (f", {s.gpus} GPU" if s.gpus else "") for r, s in wanted.items() if s.requested))
    ps = wanted["ps"]
    if not ps.requested:
        return none
    from pyspark.resource import ExecutorResourceRequests, ResourceProfileBuilder, TaskResourceRequests

    executor_level = (conf_get("spark.dynamicAllocation.enabled", "false") or "false").lower() == "true"
    cores = ps.cores or default_cores
    builder = ResourceProfileBuilder()
    if executor_level:
        ex = ExecutorResourceRequests().cores(cores)
        if ps.memory:
            ex = ex.memory(str(ps.memory))
        builder.require(ex)
    elif cores > default_cores:
        raise ElearnError(
            f"--ps-cores {cores}: with dynamic allocation off, tasks run on executors of "
            f"spark.executor.cores={default_cores}, so a {cores}-cpu task would never start. "
            f"Set --conf spark.executor.cores={cores} or turn dynamic allocation on.")
    else:
        say("--ps-cores/--ps-memory shape executors only with dynamic allocation; with it off, "
            "only the task's cpus apply")
    # One PS per executor: the task takes all its executor's cores, and TF uses them.
    builder.require(TaskResourceRequests().cpus(cores))
    return {"ps": builder.build}


__all__ = ["NodeShape", "shapes", "build_profiles", "ps_conf", "allreduce_conf", "check_shapes_fit",
           "check_shape_support", "supports_profiles"]
