"""Shipping the job instance to the processes that run ``train`` (coordinator, allreduce workers).

A job loaded from a file travels as the file's source plus the instance's attributes, and is
rebuilt by running that source again: pickling its module by value would also drag along whatever
the module holds at top level (a Spark UDF, a client, a lock) that cannot be pickled. Jobs defined
elsewhere (a notebook, an installed package) are pickled with cloudpickle.
"""
from __future__ import annotations

import os
import sys
import types
import uuid

from elearn.errors import JobError


def _driver_handle(value) -> bool:
    """A DataFrame, SparkSession or SparkContext (or a container of them): driver-side by nature,
    so leaving it out of train's copy is expected, not worth a word."""
    from pyspark import SparkContext
    from pyspark.sql import DataFrame, SparkSession

    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return bool(value) and all(_driver_handle(v) for v in value)
    return isinstance(value, (DataFrame, SparkSession, SparkContext))


def _state(job) -> dict:
    from pyspark import cloudpickle

    state, dropped = {}, []
    for key, value in vars(job).items():
        try:
            cloudpickle.dumps(value)
            state[key] = value
        except Exception:
            if not _driver_handle(value):
                dropped.append(key)
    if dropped:
        print(f"[elearn] not shipped to train's processes (cannot be pickled): "
              f"self.{', self.'.join(dropped)}; build them in train(ctx)", flush=True)
    return state


def pack_job(job) -> bytes:
    from pyspark import cloudpickle

    source = getattr(type(job), "_elearn_source", None)
    try:
        if source:
            path, name = source
            with open(path) as f:
                text = f.read()
            return cloudpickle.dumps({"file": path, "source": text, "class": name, "state": _state(job)})
        return cloudpickle.dumps({"class_obj": type(job), "state": _state(job)})
    except Exception as exc:
        raise JobError(f"the {type(job).__name__} job cannot be shipped to the processes that run "
                       f"train ({exc.__class__.__name__}: {exc}); keep Spark objects, connections "
                       "and locks out of the class and its instance") from exc


def job_paths(job) -> list:
    """The folder of the job's own file, where its sibling modules are imported from."""
    module = sys.modules.get(type(job).__module__)
    path = getattr(module, "__file__", None)
    return [os.path.dirname(os.path.abspath(path))] if path else []


def unpack_job(payload: bytes):
    from pyspark import cloudpickle

    data = cloudpickle.loads(payload)
    if "source" in data:
        folder = os.path.dirname(data["file"])
        if os.path.isdir(folder) and folder not in sys.path:
            sys.path.insert(0, folder)  # the job file's sibling modules, where they exist
        module = types.ModuleType(f"elearn_job_{uuid.uuid4().hex[:8]}")
        module.__file__ = data["file"]
        sys.modules[module.__name__] = module
        exec(compile(data["source"], data["file"], "exec"), module.__dict__)
        cls = getattr(module, data["class"])
    else:
        cls = data["class_obj"]
    job = cls.__new__(cls)
    job.__dict__.update(data["state"])
    return job
