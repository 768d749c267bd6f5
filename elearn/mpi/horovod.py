"""Horovod as the second runtime of allreduce mode (``--runtime horovod``).

With Horovod the group's TF processes average gradients with Horovod's ring allreduce instead of
TensorFlow's collectives. It needs ``horovod`` built with TensorFlow support in the executors'
environment; without it the job fails before any Spark job starts, saying what to install.
"""
from __future__ import annotations

from elearn.errors import ElearnError

INSTALL = ("HOROVOD_WITH_TENSORFLOW=1 pip install --no-build-isolation horovod "
           "(needs cmake, a C++17 compiler and the TensorFlow you train with installed first)")


def require_horovod() -> None:
    """Raise a clear error unless ``horovod.tensorflow`` imports with its TensorFlow ops built."""
    try:
        import horovod.tensorflow as hvd  # noqa: F401
    except Exception as exc:
        raise ElearnError(
            f"--runtime horovod needs Horovod built against this TensorFlow, and it is not usable "
            f"here ({exc.__class__.__name__}: {exc}). Install it in the driver's and the executors' "
            f"environment with: {INSTALL}; or leave out --runtime to use TensorFlow's own "
            "MultiWorkerMirroredStrategy.") from exc


def horovod_strategy():
    """The strategy ``ctx.strategy`` holds under Horovod: one process, one replica.

    Horovod averages gradients itself (``hvd.DistributedOptimizer``), so the TF side is the
    default single-replica strategy; ``train`` wraps its optimizer and broadcasts the initial
    variables (``hvd.callbacks.BroadcastGlobalVariablesCallback(0)``).
    """
    require_horovod()
    import horovod.tensorflow as hvd
    import tensorflow as tf

    hvd.init()
    return tf.distribute.get_strategy()
