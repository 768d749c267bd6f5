"""GPUs for a node's TF process: the devices Spark assigned to its task, and no others.

A task's GPUs reach its TF process as ``CUDA_VISIBLE_DEVICES`` (``task_gpu_env``), so a TF process
sees only the devices Spark assigned to its task (none: none).
"""
from __future__ import annotations

from elearn.errors import ElearnError

GPU = "gpu"


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
