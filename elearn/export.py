"""Exporting what ``train`` returned as a SavedModel that plain TensorFlow loads."""
from __future__ import annotations

import logging
import os
import shutil

log = logging.getLogger(__name__)


def export_model(model, model_dir: str) -> str | None:
    """Save a Keras model (tf_keras or Keras 3) or a ``tf.Module`` to ``model_dir``.

    Returns the directory, or None when ``model`` is None. The result loads with
    ``tf.saved_model.load(model_dir)``.
    """
    if model is None:
        return None
    import tensorflow as tf

    if os.path.isdir(model_dir):
        shutil.rmtree(model_dir)
    os.makedirs(os.path.dirname(os.path.abspath(model_dir)), exist_ok=True)
    module = type(model).__module__
    if module.startswith("keras") and hasattr(model, "export"):      # Keras 3
        model.export(model_dir, verbose=False)
    elif module.startswith("tf_keras") or hasattr(model, "save") and hasattr(model, "fit"):
        model.save(model_dir, save_format="tf", include_optimizer=False)
    elif isinstance(model, tf.Module):
        tf.saved_model.save(model, model_dir)
    else:
        raise TypeError(f"train returned {type(model).__name__}; return a Keras model, a tf.Module "
                        "or None")
    return model_dir
