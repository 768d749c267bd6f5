"""``--runtime horovod``: checked before any Spark job starts.

Horovod's latest release (0.28.1) is a source distribution compiled against the TensorFlow in use,
and it does not compile against TensorFlow 2.21, which elearn pins: its XLA ops include
``tensorflow/compiler/xla/client/xla_builder.h``, a header TensorFlow no longer ships since XLA
moved to its own tree. So this release of elearn runs allreduce mode on TensorFlow's own
collectives (``--runtime tf``) and refuses ``--runtime horovod`` up front, saying why and what would
be needed, instead of failing later inside every worker.
"""
from __future__ import annotations

from elearn.errors import ElearnError

INSTALL = ("HOROVOD_WITH_TENSORFLOW=1 pip install --no-build-isolation horovod "
           "(needs cmake, a C++17 compiler and the TensorFlow you train with installed first)")
DEFAULT = ("leave out --runtime to train with TensorFlow's own MultiWorkerMirroredStrategy "
           "(the default, --runtime tf)")


def require_horovod() -> None:
    """Raise an ``ElearnError`` that says what ``--runtime horovod`` needs."""
    try:
        import horovod.tensorflow  # noqa: F401
    except Exception as exc:
        raise ElearnError(
            f"--runtime horovod needs Horovod built against this TensorFlow, and it is not usable "
            f"here ({exc.__class__.__name__}: {exc}). Horovod 0.28.1, its latest release, does not "
            "compile against TensorFlow 2.21 (its XLA ops include "
            "tensorflow/compiler/xla/client/xla_builder.h, which TensorFlow no longer ships); a "
            f"release that does installs with: {INSTALL}. Meanwhile {DEFAULT}.") from exc
    raise ElearnError(
        "--runtime horovod: Horovod is installed, but this release of elearn starts allreduce "
        f"workers with MultiWorkerMirroredStrategy only; {DEFAULT}, or run the training script "
        "with horovodrun outside elearn.")
