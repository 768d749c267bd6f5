"""FieldEmbeddings under MultiWorkerMirroredStrategy, in one process (run by tests/test_embeddings.py).

Prints one JSON line: per Keras, the op types of a lookup traced under the strategy (the table
read row by row through its own copy, never whole), and, for tf_keras, the table after three steps
of a row-wise optimizer trained under the strategy and without one from the same start.
"""
import importlib
import json
import os
import sys

import numpy as np
import tensorflow as tf

import elearn

FIELDS = {"user": 100, "tags": 30}
BATCH = {"user": tf.constant([1, 2, 1, 7], tf.int64), "tags": tf.ragged.constant([[1, 2], [], [2], [5, 5]], tf.int64)}


def ops(graph):
    """Op types of ``graph`` and of the functions it calls."""
    found = {o.type for o in graph.get_operations()}
    for fn in graph._functions.values():
        found |= ops(fn.graph) if hasattr(fn, "graph") else set()
    return found


def lookup_ops(keras, strategy):
    with strategy.scope():
        layer = elearn.FieldEmbeddings(FIELDS, 4, keras=keras)
        layer(BATCH)
    fn = tf.function(lambda: strategy.run(lambda: layer(BATCH)))
    return sorted(ops(fn.get_concrete_function().graph))


def trained_table(keras, strategy, start):
    with strategy.scope():
        inputs = {"user": keras.Input((), dtype="int64", name="user"),
                  "tags": keras.Input((None,), dtype="int64", ragged=True, name="tags")}
        layer = elearn.FieldEmbeddings(FIELDS, 4, keras=keras)
        out = keras.layers.Dense(1)(keras.layers.Flatten()(layer(inputs)))
        model = keras.Model(inputs, out)
        model.compile(keras.optimizers.legacy.Adagrad(0.5), "mse")
    layer.table.assign(start)
    model.layers[-1].kernel.assign(np.ones((8, 1), np.float32))
    ds = tf.data.Dataset.from_tensors((BATCH, tf.constant([1.0, 0.0, 1.0, 0.0]))).repeat(3)
    model.fit(ds, epochs=1, verbose=0)
    return np.array(layer.table.numpy())


def main():
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    seen = {k: lookup_ops(importlib.import_module(k), strategy) for k in ("tf_keras", "keras")}
    import tf_keras

    start = np.random.default_rng(3).uniform(-0.05, 0.05, (130, 4)).astype(np.float32)
    mirrored = trained_table(tf_keras, strategy, start)
    plain = trained_table(tf_keras, tf.distribute.get_strategy(), start)
    seen["moved_rows"] = sorted(int(r) for r in np.nonzero(np.any(mirrored != start, axis=1))[0])
    seen["max_difference"] = float(np.max(np.abs(mirrored - plain)))
    print(json.dumps(seen))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
