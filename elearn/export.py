"""Exporting what ``train`` returned as a SavedModel that plain TensorFlow loads.

Under ``ParameterServerStrategy`` with a ``variable_partitioner``, big variables are
``ShardedVariable``s: one logical table made of parts on different parameter servers. TensorFlow
saves such a variable as one full-shape placeholder variable whose value is written slice by slice,
and documents that ``tf.saved_model.load`` does not support the result. In practice a model with
one sharded table may load, but as soon as a model holds several (TensorFlow names every one of
them ``ShardedVariable``) or reaches one through more than one attribute, loading fails with
"Received incompatible tensor with shape (0,) when attempting to restore variable ...". So a model
with sharded variables is exported as a serving copy in which each sharded table is one ordinary
variable holding the concatenated parts; the computation is unchanged.
"""
from __future__ import annotations

import logging
import os
import shutil

from elearn.errors import ElearnError

log = logging.getLogger(__name__)


def export_model(model, model_dir: str) -> str | None:
    """Save a Keras model (tf_keras or Keras 3) or a ``tf.Module`` to ``model_dir``.

    Returns the directory, or None when ``model`` is None. The result loads with
    ``tf.saved_model.load(model_dir)`` in any process, without a distribution strategy, and its
    ``serving_default`` signature (Keras) or traced methods (``tf.Module``) compute what the
    trained model computes.

    When the model holds ``ShardedVariable``s (PS mode with a ``variable_partitioner``), what is
    written is a serving copy: every sharded table is joined into one variable of its full shape
    (first-axis concatenation of the parts, in order), because TensorFlow's own SavedModel of a
    sharded variable does not load outside ``ParameterServerStrategy``. For a functional or
    Sequential tf_keras model the copy is ``clone_model`` built outside the strategy with the
    trained weights; for a ``tf.Module`` the sharded attributes are swapped for joined variables
    while saving and put back afterwards, so the methods are traced against the joined variables.
    The joined values pass through the exporting process's memory once. Call it outside
    ``strategy.scope()``.
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
        if _keras_has_shards(model):
            model = _keras_serving_copy(model)
        model.save(model_dir, save_format="tf", include_optimizer=False)
    elif isinstance(model, tf.Module):
        with _joined_shards(model):
            tf.saved_model.save(model, model_dir)
    else:
        raise TypeError(f"train returned {type(model).__name__}; return a Keras model, a tf.Module "
                        "or None")
    return model_dir


# -- sharded variables -------------------------------------------------------------------------

def _is_sharded(value) -> bool:
    import tensorflow as tf

    return isinstance(value, tf.__internal__.distribute.ShardedVariable)


def _joined_value(sharded):
    import numpy as np

    return np.concatenate([part.numpy() for part in sharded.variables], axis=0)


def _outside_strategy(what: str) -> None:
    import tensorflow as tf

    if tf.distribute.has_strategy():
        raise ElearnError(f"{what} holds sharded variables and is exported inside "
                          f"strategy.scope(), where a new variable would be sharded again; "
                          "call export_model after leaving the scope")


def _keras_has_shards(model) -> bool:
    return any(hasattr(v, "_sharded_container") for v in model.weights)


def _logical_weights(model) -> list:
    """``model.weights`` with each run of shard parts replaced by its ``ShardedVariable``."""
    out, seen = [], set()
    for v in model.weights:
        ref = getattr(v, "_sharded_container", None)
        whole = ref() if ref is not None else v
        if whole is None:
            raise ElearnError(f"the sharded variable of {v.name} no longer exists; export the model "
                              "while the strategy that trained it is alive")
        if id(whole) not in seen:
            seen.add(id(whole))
            out.append(whole)
    return out


def _keras_serving_copy(model):
    """The model rebuilt outside the strategy (``clone_model``) with the joined trained weights."""
    import tf_keras

    _outside_strategy(f"model {model.name!r}")
    try:
        copy = tf_keras.models.clone_model(model)
    except Exception as exc:  # subclassed models and layers without a usable get_config
        raise ElearnError(
            f"model {model.name!r} has sharded variables and could not be rebuilt for export "
            f"({type(exc).__name__}: {exc}); build it with the functional API or Sequential, or "
            "return a tf.Module, or make every custom layer's get_config() complete") from exc
    weights = _logical_weights(model)
    if len(weights) != len(copy.weights) or any(
            tuple(w.shape) != tuple(c.shape) for w, c in zip(weights, copy.weights)):
        raise ElearnError(f"the rebuilt copy of model {model.name!r} has weights "
                          f"{[tuple(c.shape) for c in copy.weights]} but the trained model has "
                          f"{[tuple(w.shape) for w in weights]}; export a functional model whose "
                          "layers create their weights in build()")
    copy.set_weights([_joined_value(w) if _is_sharded(w) else w.numpy() for w in weights])
    log.info("exporting %s with %d sharded tables joined", model.name, sum(map(_is_sharded, weights)))
    return copy


class _joined_shards:
    """Within the block, every ``ShardedVariable`` reachable from a ``tf.Module``'s attributes
    (directly or in lists, tuples and dicts) is replaced by one joined variable.

    Containers are replaced, never mutated: TensorFlow refuses to save a tracked list whose
    elements were reassigned, and the originals come back unchanged on exit.
    """

    def __init__(self, root):
        self.root = root
        self.undo = []            # (object, attribute, original value)
        self.joined = {}          # id(ShardedVariable) -> its joined variable

    def __enter__(self):
        self._visit(self.root, set())
        return self

    def __exit__(self, *exc):
        for obj, name, value in reversed(self.undo):
            setattr(obj, name, value)
        self.undo.clear()
        return False

    def _plain(self, sharded):
        import tensorflow as tf

        if id(sharded) not in self.joined:
            _outside_strategy(f"{type(self.root).__name__}")
            name = sharded.name.split(":")[0]
            self.joined[id(sharded)] = tf.Variable(_joined_value(sharded), name=name,
                                                   trainable=sharded.variables[0].trainable)
        return self.joined[id(sharded)]

    def _visit(self, obj, seen) -> None:
        import tensorflow as tf

        if id(obj) in seen:
            return
        seen.add(id(obj))
        for name, value in list(vars(obj).items()):
            if name.startswith("_self_") or isinstance(value, tf.types.experimental.GenericFunction):
                continue
            new = self._swap(value, seen)
            if new is not value:
                self.undo.append((obj, name, value))
                setattr(obj, name, new)

    def _swap(self, value, seen):
        """``value`` with sharded variables joined: the same object if nothing changed."""
        import tensorflow as tf

        if _is_sharded(value):
            return self._plain(value)
        if isinstance(value, tf.Module):
            self._visit(value, seen)
            return value
        if isinstance(value, (list, tuple)):
            items = [self._swap(v, seen) for v in value]
            if all(a is b for a, b in zip(items, value)):
                return value
            if not isinstance(value, tuple):
                return items
            # __class__, not type(): tracked tuples are proxies that report the wrapped class.
            return value.__class__._make(items) if hasattr(value, "_fields") else tuple(items)
        if isinstance(value, dict):
            items = {k: self._swap(v, seen) for k, v in value.items()}
            if all(items[k] is v for k, v in value.items()):
                return value
            return items
        return value
