"""Saying, before a sparse model trains, that its optimizer rewrites whole embedding tables.

An embedding table's gradient is an ``IndexedSlices`` of the rows a batch looked up, and an
optimizer may apply it as a scatter to those rows or rewrite the whole table and its slots. Which
one does which is not in the names. CPU per update of a 2M x 16 float table (122 MiB) from a
gradient of 1,000 rows, one process, TF 2.21 (``bench/optimizers.py``; the latest run in
``bench/README.md``):

=================  =====================================  ===========================
Keras              rows only (ms)                         whole table (ms)
=================  =====================================  ===========================
tf_keras           ``Adagrad`` 0.4                        ``SGD`` 50 (any momentum),
                                                          ``Adam`` 144, ``Ftrl`` 137
tf_keras legacy    ``Adagrad`` 0.5, ``SGD`` 0.3 (also     ``Adam`` 95
                   with momentum), ``Ftrl`` 0.8
Keras 3            ``SGD`` without momentum 0.6           ``SGD`` with momentum 47,
                                                          ``Adagrad`` 31, ``Adam`` 79, ``Ftrl`` 152
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


def dense_update_warning(model, threshold: int = TABLE_BYTES) -> str | None:
    """The warning for ``model`` (compiled) when its optimizer rewrites tables of ``threshold`` bytes
    or more on every step; None when it does not, or no variable is that big."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or updates_rows_only(optimizer):
        return None
    big = []
    for variable in getattr(model, "trainable_variables", []):
        size = _bytes(variable)
        if size >= threshold:
            big.append((size, variable))
    if not big:
        return None
    big.sort(key=lambda pair: -pair[0])
    tables = ", ".join(f"{v.name} ({' x '.join(f'{int(d):,}' for d in v.shape)}, {b / 2**20:,.0f} MiB)"
                       for b, v in big[:3]) + (f" and {len(big) - 3} more" if len(big) > 3 else "")
    keras, generation, name = _kind(getattr(optimizer, "inner_optimizer", optimizer))
    which = f"{keras}{'.optimizers.legacy' if generation == 'legacy' else '.optimizers'}.{name}"
    return (f"{which} rewrites every row of a table (and its slots) on every step, though a batch "
            f"touches only the rows it looked up: {tables}. Measured on a 122 MiB table, CPU per "
            f"update: tf_keras Adam 144 ms, Adagrad 0.4 ms. Optimizers that update only the rows looked "
            f"up: {ALTERNATIVES}. (Dense layers may keep Adam through a second optimizer in a custom "
            f"train_step.)")
