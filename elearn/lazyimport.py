"""Loading a job file on the driver without importing TensorFlow there.

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
import sys

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
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is None:
                continue
            if spec.loader is None or not hasattr(spec.loader, "exec_module"):
                return spec
            spec.loader = importlib.util.LazyLoader(spec.loader)
            return spec
        return None


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


def is_loaded(name: str) -> bool:
    """Whether module ``name`` is imported for real (not absent, not still lazy)."""
    module = sys.modules.get(name)
    return module is not None and type(module).__name__ != "_LazyModule"
