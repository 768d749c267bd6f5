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
"""
from __future__ import annotations

import math

TABLE_BYTES = 64 << 20

# (Keras implementation, generation, class name) of the optimizers measured to update only the rows
# a sparse gradient names; ``momentum`` is checked for Keras 3's SGD.
_ROWS_ONLY = {("tf_keras", "current", "Adagrad"), ("tf_keras", "legacy", "Adagrad"),
              ("tf_keras", "legacy", "SGD"), ("tf_keras", "legacy", "Ftrl"), ("keras", "current", "SGD")}

ALTERNATIVES = ("tf_keras.optimizers.Adagrad; tf_keras.optimizers.legacy.Adagrad, .SGD (with or without "
                "momentum) or .Ftrl; in Keras 3, SGD without momentum")


def _kind(optimizer) -> tuple[str, str, str]:
    module = type(optimizer).__module__
    keras = "tf_keras" if module.startswith("tf_keras") else "keras" if module.startswith("keras") else "?"
    generation = "legacy" if ".legacy" in module else "current"
    return keras, generation, type(optimizer).__name__


def updates_rows_only(optimizer) -> bool:
    """Whether ``optimizer`` applies an embedding gradient to the looked-up rows only (measured)."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)   # a LossScaleOptimizer's own
    kind = _kind(optimizer)
    if kind not in _ROWS_ONLY:
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


def _big_tables(model, threshold: int) -> str:
    """The trainable variables of ``threshold`` bytes or more, biggest first, as the warnings name
    them ("" when there are none)."""
    big = sorted(((_bytes(v), v) for v in getattr(model, "trainable_variables", [])),
                 key=lambda pair: -pair[0])
    big = [(b, v) for b, v in big if b >= threshold]
    return ", ".join(f"{v.name} ({' x '.join(f'{int(d):,}' for d in v.shape)}, {b / 2**20:,.0f} MiB)"
                     for b, v in big[:3]) + (f" and {len(big) - 3} more" if len(big) > 3 else "")


def mirrored_tables_warning(model, threshold: int = TABLE_BYTES) -> str | None:
    """Allreduce mode: the notice for a model with tables of ``threshold`` bytes or more.

    Under ``MultiWorkerMirroredStrategy`` every worker holds every table and an embedding lookup
    reads a mirrored table whole (``tf.nn.embedding_lookup`` converts what is not a plain resource
    variable to a tensor): measured with ``bench/ctr_probe.py`` on a DeepFM of 4.69M ids, 859 ms of
    CPU per step against 44.5 ms for the same model without a strategy, growing with the tables.
    That is TensorFlow's, and PS mode does not pay it."""
    tables = _big_tables(model, threshold)
    if not tables:
        return None
    return (f"this model has large tables ({tables}); under allreduce (MultiWorkerMirroredStrategy) "
            f"every step reads each of them whole on every worker: measured on a 4.69M-id DeepFM, 19x "
            f"the CPU per step of the same model in one process. Such a model trains faster in PS mode "
            f"(--ps N), which looks up only the rows a batch needs.")


def dense_update_warning(model, threshold: int = TABLE_BYTES) -> str | None:
    """The warning for ``model`` (compiled) when its optimizer rewrites tables of ``threshold`` bytes
    or more on every step; None when it does not, or no variable is that big."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or updates_rows_only(optimizer):
        return None
    tables = _big_tables(model, threshold)
    if not tables:
        return None
    keras, generation, name = _kind(getattr(optimizer, "inner_optimizer", optimizer))
    which = f"{keras}{'.optimizers.legacy' if generation == 'legacy' else '.optimizers'}.{name}"
    return (f"{which} rewrites every row of a table (and its slots) on every step, though a batch "
            f"touches only the rows it looked up: {tables}. Measured on a 122 MiB table, CPU per "
            f"update: tf_keras Adam 136 ms, Adagrad 0.5 ms. Optimizers that update only the rows looked "
            f"up: {ALTERNATIVES}. (Dense layers may keep Adam through a second optimizer in a custom "
            f"train_step.)")
