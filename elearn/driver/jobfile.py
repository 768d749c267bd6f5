"""A job file turned into its ``SparkTFJob`` subclass, on the driver, without importing TensorFlow.

A job file starts with ``import tensorflow as tf`` because ``train`` needs it, but ``train`` never runs
on the driver: the driver only calls ``pre_train`` (Spark) and ships the file to the processes that
train. Importing TensorFlow costs seconds of CPU and half a gigabyte of memory before Spark has even
started, on the critical path of every submit. While the job file is executed, the TensorFlow
family is therefore imported lazily (``importlib.util.LazyLoader``): the module object exists, and
TensorFlow really loads the first time anything touches it — in ``pre_train``, say — exactly as it
would have otherwise.
"""
from __future__ import annotations

import contextlib
import copyreg
import importlib
import importlib.abc
import importlib.util
import os
import sys
import uuid

from elearn.errors import JobError
from elearn.job import SparkTFJob
from elearn.train.tfimport import real_spec

DEFERRED = ("tensorflow", "tf_keras", "keras")


def _reduce_lazy(module):
    # Pickling a module means importing it by name on the other side (what cloudpickle does for a
    # loaded one); without this a Spark UDF whose globals hold a still-lazy `tf` would not pickle.
    return importlib.import_module, (module.__spec__.name,)


class _DeferringFinder(importlib.abc.MetaPathFinder):
    registered: set = set()

    def find_spec(self, name, path=None, target=None):
        if name not in DEFERRED:
            return None
        spec = real_spec(self, name, path, target)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


def _register_pickling(module) -> None:
    kind = type(module)
    if kind not in _DeferringFinder.registered:
        _DeferringFinder.registered.add(kind)
        copyreg.pickle(kind, _reduce_lazy)


@contextlib.contextmanager
def tensorflow_deferred():
    """Within the block, ``import tensorflow`` (``tf_keras``, ``keras``) returns a lazy module."""
    finder = _DeferringFinder()
    before = {name for name in DEFERRED if name in sys.modules}
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in DEFERRED:
            module = sys.modules.get(name)
            if name not in before and module is not None and type(module).__name__ == "_LazyModule":
                _register_pickling(module)


def load_job_class(path: str, class_name: str | None = None) -> type:
    """The ``SparkTFJob`` subclass defined in the job file ``path``."""
    if not os.path.isfile(path):
        raise JobError(f"job file not found: {path}")
    module_name = f"elearn_job_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        with tensorflow_deferred():  # train's imports are for train's processes, not the driver
            spec.loader.exec_module(module)
    except Exception as exc:
        raise JobError(f"importing {path} failed: {exc.__class__.__name__}: {exc}") from exc
    # isinstance(obj, type) would read a lazy module's __class__ and so load it: look at type(obj).
    found = {name: obj for name, obj in vars(module).items()
             if issubclass(type(obj), type) and issubclass(obj, SparkTFJob) and obj is not SparkTFJob
             and obj.__module__ == module_name}
    if class_name:
        if class_name not in found:
            raise JobError(f"{path} has no SparkTFJob subclass named {class_name!r}"
                           + (f"; it defines {', '.join(sorted(found))}" if found else ""))
        found[class_name]._elearn_source = (os.path.abspath(path), class_name)
        return found[class_name]
    if not found:
        raise JobError(f"{path} defines no subclass of elearn.SparkTFJob; "
                       "write `class MyJob(SparkTFJob): def train(self, ctx): ...`")
    if len(found) > 1:
        raise JobError(f"{path} defines several SparkTFJob subclasses ({', '.join(sorted(found))}); "
                       "choose one with --job-class NAME")
    (name, cls), = found.items()
    cls._elearn_source = (os.path.abspath(path), name)  # how train's processes rebuild it
    return cls
