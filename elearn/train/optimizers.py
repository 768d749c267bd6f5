"""Saying, before a sparse model trains, what will make it slow: an optimizer that rewrites whole
embedding tables, or (allreduce mode) tables read whole on every step.

An embedding table's gradient is an ``IndexedSlices`` of the rows a batch looked up, and an
optimizer may apply it as a scatter to those rows or rewrite the whole table and its slots. Which
one does which is not in the names. CPU per update of a 2M x 16 float table (122 MiB) from a
gradient of 1,000 rows, one process, TF 2.21 (``bench/optimizers.py``; this run's full table is
in ``bench/README.md``):

=================  =====================================  ===========================
Keras              rows only (ms)                         whole table (ms)
=================  =====================================  ===========================
tf_keras           ``Adagrad`` 0.5                        ``SGD`` 44-62 (any momentum),
                                                          ``Adam`` 136, ``Ftrl`` 151
tf_keras legacy    ``Adagrad`` 0.6, ``SGD`` 0.5 (0.3      ``Adam`` 95
                   with momentum), ``Ftrl`` 0.5
Keras 3            ``SGD`` without momentum 0.2           ``SGD`` with momentum 30,
                                                          ``Adagrad`` 35, ``Adam`` 105, ``Ftrl`` 141
=================  =====================================  ===========================

A whole-table update costs in proportion to the table, so a 10M-row table under ``Adam`` spends
most of every step there, silently: the model still learns. Above :data:`TABLE_BYTES` the training
process says so once, at the first ``fit`` (``elearn.train.keras_fit``).

Under ``MultiWorkerMirroredStrategy`` (allreduce mode; ``bench/optimizers.py --strategy mwms``) the
same split holds but for tf_keras's current ``Adagrad``, which gathers its accumulator from the
mirrored slot and so reads the whole slot every step: 10.3 ms per update against 1.0 for the
legacy ``Adagrad``. And a lookup reads a mirrored table whole unless it goes through the worker's own
copy, as ``elearn.FieldEmbeddings`` does: the second warning names tables looked up otherwise.
"""
from __future__ import annotations

import math

TABLE_BYTES = 64 << 20

# (Keras implementation, generation, class name) of the optimizers measured to update only the rows
# a sparse gradient names; ``momentum`` is checked for Keras 3's SGD.
_ROWS_ONLY = {("tf_keras", "current", "Adagrad"), ("tf_keras", "legacy", "Adagrad"),
              ("tf_keras", "legacy", "SGD"), ("tf_keras", "legacy", "Ftrl"), ("keras", "current", "SGD")}

# Under a mirrored strategy, tf_keras's current Adagrad reads its whole accumulator (see above).
_ROWS_ONLY_MIRRORED = _ROWS_ONLY - {("tf_keras", "current", "Adagrad")}

ALTERNATIVES = ("tf_keras.optimizers.Adagrad; tf_keras.optimizers.legacy.Adagrad, .SGD (with or without "
                "momentum) or .Ftrl; in Keras 3, SGD without momentum")
ALTERNATIVES_MIRRORED = ("tf_keras.optimizers.legacy.Adagrad, .SGD (with or without momentum) or .Ftrl; "
                         "in Keras 3, SGD without momentum")

# CPU per update of the bench's 122 MiB table (bench/README.md, bench/optimizers.py).
COSTS = "tf_keras Adam 136 ms, Adagrad 0.5 ms"
COSTS_MIRRORED = ("under MultiWorkerMirroredStrategy, tf_keras Adam 239 ms, tf_keras Adagrad 10.3 ms, "
                  "tf_keras legacy Adagrad 1.0 ms")


def _kind(optimizer) -> tuple[str, str, str]:
    module = type(optimizer).__module__
    keras = "tf_keras" if module.startswith("tf_keras") else "keras" if module.startswith("keras") else "?"
    generation = "legacy" if ".legacy" in module else "current"
    return keras, generation, type(optimizer).__name__


def updates_rows_only(optimizer, mirrored: bool = False) -> bool:
    """Whether ``optimizer`` applies an embedding gradient to the looked-up rows only (measured),
    without a strategy or, ``mirrored``, under MultiWorkerMirroredStrategy."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)   # a LossScaleOptimizer's own
    kind = _kind(optimizer)
    if kind not in (_ROWS_ONLY_MIRRORED if mirrored else _ROWS_ONLY):
        return False
    if kind[0] == "keras":
        momentum = getattr(optimizer, "momentum", 0.0)
        return not float(momentum)
    return True


def _bytes(variable) -> int:
    """A variable's bytes, for tf.Variable, ShardedVariable and Keras 3 variables alike (whose shape is
    a tuple and dtype a string)."""
    import numpy as np

    dims = list(variable.shape)
    if any(d is None for d in dims):
        return 0
    dtype = getattr(variable.dtype, "as_numpy_dtype", variable.dtype)
    return math.prod(int(d) for d in dims) * np.dtype(dtype).itemsize


def _layers(model) -> list:
    """Every layer of ``model``, nested models' included."""
    found, seen, todo = [], set(), [model]
    while todo:
        layer = todo.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        found.append(layer)
        todo.extend(getattr(layer, "layers", None) or [])
    return found


def _field_embedding_tables(model) -> set[int]:
    """``id`` of every table of an ``elearn.FieldEmbeddings`` layer in ``model``, the tables looked
    up through the worker's own copy."""
    return {id(layer.table) for layer in _layers(model)
            if getattr(layer, "looks_up_own_copy", False) and getattr(layer, "table", None) is not None}


def sparse_lookup_layers(model) -> list[str]:
    """Names of the layers of ``model`` that look rows up in a table (``elearn.FieldEmbeddings``, a
    Keras ``Embedding``): their gradients are ``IndexedSlices`` of a batch's rows."""
    return sorted(layer.name for layer in _layers(model)
                  if getattr(layer, "looks_up_own_copy", False) or type(layer).__name__ == "Embedding")


def _big_tables(model, threshold: int, skip: set[int] = frozenset()) -> str:
    """The trainable variables of ``threshold`` bytes or more (but those in ``skip``), biggest first,
    as the warnings name them ("" when there are none)."""
    big = sorted(((_bytes(v), v) for v in getattr(model, "trainable_variables", []) if id(v) not in skip),
                 key=lambda pair: -pair[0])
    big = [(b, v) for b, v in big if b >= threshold]
    return ", ".join(f"{v.name} ({' x '.join(f'{int(d):,}' for d in v.shape)}, {b / 2**20:,.0f} MiB)"
                     for b, v in big[:3]) + (f" and {len(big) - 3} more" if len(big) > 3 else "")


def mirrored_tables_warning(model, threshold: int = TABLE_BYTES) -> str | None:
    """Allreduce mode: the notice for a model with tables of ``threshold`` bytes or more that are
    looked up other than by ``elearn.FieldEmbeddings``.

    Under ``MultiWorkerMirroredStrategy`` every worker holds every table, and ``tf.nn.embedding_lookup``
    (a Keras ``Embedding``) or ``tf.gather`` reads a mirrored table whole: they convert what is not a
    plain resource variable to a tensor. Measured with ``bench/ctr_probe.py`` on a DeepFM of 4.69M
    ids, two runs: 93.6 ms of CPU per step against 25.9 ms for the same model without a strategy
    (3.6x, machine idle), and 859 against 44.5 (19x, machine loaded), growing with the tables.
    ``FieldEmbeddings`` looks up the worker's own copy instead."""
    tables = _big_tables(model, threshold, skip=_field_embedding_tables(model))
    if not tables:
        return None
    return (f"this model looks up large tables ({tables}) with a Keras Embedding or tf.nn.embedding_lookup; "
            f"under allreduce (MultiWorkerMirroredStrategy) such a lookup reads each table whole on every "
            f"step, on every worker: measured on a 4.69M-id DeepFM, 3.6x to 19x the CPU per step of the same model "
            f"in one process. elearn.FieldEmbeddings looks up only the rows a batch needs (with a row-wise "
            f"optimizer about the CPU of one process), or the model trains faster in PS mode (--ps N).")


def dense_update_warning(model, threshold: int = TABLE_BYTES, mirrored: bool = False) -> str | None:
    """The warning for ``model`` (compiled) when its optimizer reads or rewrites tables of
    ``threshold`` bytes or more whole on every step, without a strategy or, ``mirrored``, under
    MultiWorkerMirroredStrategy; None when it does not, or no variable is that big."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or updates_rows_only(optimizer, mirrored):
        return None
    tables = _big_tables(model, threshold)
    if not tables:
        return None
    keras, generation, name = _kind(getattr(optimizer, "inner_optimizer", optimizer))
    which = f"{keras}{'.optimizers.legacy' if generation == 'legacy' else '.optimizers'}.{name}"
    return (f"{which} reads or rewrites every row of a table (or its slots) on every step, though a batch "
            f"touches only the rows it looked up: {tables}. Measured on a 122 MiB table, CPU per update: "
            f"{COSTS_MIRRORED if mirrored else COSTS}. Optimizers that update only the rows looked up"
            f"{' under this strategy' if mirrored else ''}: {ALTERNATIVES_MIRRORED if mirrored else ALTERNATIVES}. "
            f"(Dense layers may keep Adam through a second optimizer in a custom train_step.)")
