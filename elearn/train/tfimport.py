"""Importing TensorFlow without its C++ start-up chatter on the user's console."""
from __future__ import annotations

import contextlib
import logging
import os
import sys


@contextlib.contextmanager
def stderr_to(path: str | None):
    """Point file descriptor 2 at ``path`` (None: leave it) for the duration of the block."""
    if path is None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(target)


def is_loaded(name: str) -> bool:
    """Whether module ``name`` is imported for real (not absent, not still lazy: the driver loads
    job files with TensorFlow deferred, ``elearn.driver.jobfile``)."""
    module = sys.modules.get(name)
    return module is not None and type(module).__name__ != "_LazyModule"


def import_tensorflow(log_path: str | None = None):
    """``import tensorflow`` with absl's pre-initialisation lines sent to ``log_path``."""
    if is_loaded("tensorflow") or os.environ.get("ELEARN_TF_LOG") == "1":
        import tensorflow as tf

        return tf
    with stderr_to(log_path):
        import tensorflow as tf
        import tf_keras  # noqa: F401  (same chatter, same place)
    return tf


@contextlib.contextmanager
def quiet_tf_warnings():
    """TensorFlow's Python warnings (about saving internals the user cannot act on) to ERROR only,
    for the block; ``--tf-log`` (``ELEARN_TF_LOG=1``) lets them through."""
    logger = logging.getLogger("tensorflow")
    level = logger.level
    if os.environ.get("ELEARN_TF_LOG") != "1":
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def real_spec(finder, name: str, path=None, target=None):
    """The spec the import system would find for ``name`` without ``finder`` (a meta-path finder
    that wraps another's loader: the driver's deferred TensorFlow, the training process's Keras
    patch); None if nothing finds it."""
    for other in sys.meta_path:
        if other is finder or not hasattr(other, "find_spec"):
            continue
        spec = other.find_spec(name, path, target)
        if spec is not None:
            return spec
    return None
