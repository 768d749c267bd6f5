"""Exporting what ``train`` returned as a SavedModel that plain TensorFlow loads.

Under ``ParameterServerStrategy`` with a ``variable_partitioner``, big variables are
``ShardedVariable``s: one logical table made of parts on different parameter servers. TensorFlow
(2.21) exports such a variable as one uninitialized full-shape stand-in, traces the saved functions
against the stand-in, and writes the value slice by slice; its documentation says loading the
result with ``tf.saved_model.load`` is not supported. It works for the simplest models (a built-in
``Embedding`` layer) and fails for common ones: a Keras layer that also keeps its tables in a dict
(an FM's field tables) exports a second, empty stand-in and the load stops with "Received
incompatible tensor with shape (0,) when attempting to restore variable ...", and a ``tf.gather``
on a sharded table reads the parts themselves, which load with wrong values for the rows of the
later parts, silently. So a model with sharded variables is exported as a serving copy in which
each sharded table is one ordinary variable holding the concatenated parts; the computation is
unchanged.
"""
from __future__ import annotations

import logging
import os
import shutil

from elearn.errors import ElearnError
from elearn.train.tfimport import quiet_tf_warnings

log = logging.getLogger(__name__)


def export_model(model, model_dir: str, options=None) -> str | None:
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
    trained weights. For a ``tf.Module``, and a tf_keras model ``clone_model`` cannot rebuild
    (subclassed, or a custom layer whose ``get_config`` is incomplete), every sharded variable
    reachable from its attributes (also inside lists, tuples, dicts and sub-modules) is swapped for
    a joined one while saving and put back afterwards, so the saved functions are traced against
    the joined variables; a sharded variable reachable only some other way (a closure, a global)
    is not seen. The joined values pass through the exporting process's memory once. Call it
    outside ``strategy.scope()``.

    ``options`` (``tf.saved_model.SaveOptions``) name the device whose host writes the files: in
    PS mode the chief's, since the parameter servers holding the variables need not see
    ``model_dir``.
    """
    if model is None:
        return None
    if os.path.isdir(model_dir):
        shutil.rmtree(model_dir)
    os.makedirs(os.path.dirname(os.path.abspath(model_dir)), exist_ok=True)
    with quiet_tf_warnings():
        _save(model, model_dir, options)
    return model_dir


def _save(model, model_dir: str, options=None) -> None:
    import tensorflow as tf

    module = type(model).__module__
    if module.startswith("keras") and hasattr(model, "export"):      # Keras 3
        model.export(model_dir, verbose=False)
    elif module.startswith("tf_keras") or hasattr(model, "save") and hasattr(model, "fit"):
        copy = _keras_serving_copy(model) if _keras_has_shards(model) else model
        if copy is None:
            with _joined_shards(model):
                model.save(model_dir, save_format="tf", include_optimizer=False, options=options)
        else:
            copy.save(model_dir, save_format="tf", include_optimizer=False, options=options)
    elif isinstance(model, tf.Module):
        with _joined_shards(model):
            tf.saved_model.save(model, model_dir, options=options)
    else:
        raise TypeError(f"train returned {type(model).__name__}; return a Keras model, a tf.Module "
                        "or None")


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
    try:
        weights = model.weights
    except ValueError:        # not built: saving reports that better than we would
        return False
    return any(hasattr(v, "_sharded_container") for v in weights)


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
    """The model rebuilt outside the strategy (``clone_model``) with the joined trained weights,
    or None when it cannot be rebuilt faithfully (then its variables are swapped instead)."""
    import tf_keras

    _outside_strategy(f"model {model.name!r}")
    weights = _logical_weights(model)
    try:
        copy = tf_keras.models.clone_model(model)
        shapes = [tuple(c.shape) for c in copy.weights]    # raises if the clone is not built
    except Exception as exc:  # subclassed models, layers whose get_config cannot rebuild them
        log.info("exporting %s by swapping its sharded variables (clone_model: %s)", model.name, exc)
        return None
    if shapes != [tuple(w.shape) for w in weights]:
        log.info("exporting %s by swapping its sharded variables (the clone's weights differ)",
                 model.name)
        return None
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
        self.containers = {}      # id(list, tuple or dict) -> its replacement (or itself)
        self.weight_lists = []    # (Keras layer, list attribute, its original copy)

    def __enter__(self):
        self._visit(self.root, set())
        return self

    def __exit__(self, *exc):
        for obj, name, value in reversed(self.undo):
            setattr(obj, name, value)
        # Keras layers add what is assigned to their weight lists; put the lists back as they were.
        for obj, name, value in self.weight_lists:
            object.__setattr__(obj, name, value)
        self.undo.clear()
        self.weight_lists.clear()
        self.containers.clear()
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
        for name in ("_trainable_weights", "_non_trainable_weights"):
            if isinstance(vars(obj).get(name), list):
                self.weight_lists.append((obj, name, list(vars(obj)[name])))
        for name, value in list(vars(obj).items()):
            if name in ("_trainable_weights", "_non_trainable_weights") \
                    or isinstance(value, tf.types.experimental.GenericFunction):
                continue
            if name.startswith("_self_"):
                # TensorFlow's tracking bookkeeping (a functional model's layers live there):
                # descend into the modules it holds, never rewrite it.
                self._descend(value, seen)
                continue
            new = self._swap(value, seen)
            if new is not value:
                self.undo.append((obj, name, value))
                setattr(obj, name, new)

    def _descend(self, value, seen) -> None:
        import tensorflow as tf

        if isinstance(value, tf.Module):
            self._visit(value, seen)
        elif isinstance(value, (list, tuple)) and id(value) not in seen:
            seen.add(id(value))
            for v in value:
                self._descend(v, seen)

    def _swap(self, value, seen):
        """``value`` with sharded variables joined: the same object if nothing changed."""
        import tensorflow as tf

        if _is_sharded(value):
            return self._plain(value)
        if isinstance(value, tf.Module):
            self._visit(value, seen)
            return value
        if not isinstance(value, (list, tuple, dict)):
            return value
        # A container reached twice gets the same replacement; one holding itself is left as is.
        if id(value) in self.containers:
            return self.containers[id(value)]
        self.containers[id(value)] = value
        self.containers[id(value)] = new = self._swap_items(value, seen)
        return new

    def _swap_items(self, value, seen):
        if isinstance(value, dict):
            items = {k: self._swap(v, seen) for k, v in value.items()}
            return value if all(items[k] is v for k, v in value.items()) else items
        items = [self._swap(v, seen) for v in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        if not isinstance(value, tuple):
            return items
        # __class__, not type(): tracked tuples are proxies that report the wrapped class.
        return value.__class__._make(items) if hasattr(value, "_fields") else tuple(items)
