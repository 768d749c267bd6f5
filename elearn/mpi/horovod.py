"""``--runtime horovod``: checked before any Spark job starts.

Horovod's last release (0.28.1) is a source distribution compiled against the TensorFlow in use;
it does not build against the TensorFlow elearn pins, so this release of elearn runs allreduce
mode on TensorFlow's own collectives (``--runtime tf``) and refuses ``--runtime horovod`` with what
to install, instead of failing later inside every worker.
"""
from __future__ import annotations

from elearn.errors import ElearnError

INSTALL = ("HOROVOD_WITH_TENSORFLOW=1 pip install --no-build-isolation horovod "
           "(needs cmake, a C++17 compiler and the TensorFlow you train with installed first)")


def require_horovod() -> None:
    """Raise an ``ElearnError`` that says what ``--runtime horovod`` needs."""
    try:
        import horovod.tensorflow  # noqa: F401
    except Exception as exc:
        raise ElearnError(
            f"--runtime horovod needs Horovod built against this TensorFlow, and it is not usable "
            f"here ({exc.__class__.__name__}: {exc}). Install it in the driver's and the executors' "
            f"environment with: {INSTALL}; or leave out --runtime to train with TensorFlow's own "
            "MultiWorkerMirroredStrategy (the default).") from exc
    raise ElearnError(
        "--runtime horovod: Horovod is installed, but this release of elearn starts allreduce "
        "workers with TensorFlow's MultiWorkerMirroredStrategy only; leave out --runtime (the "
        "default, --runtime tf), or run the training script with horovodrun outside elearn.")
