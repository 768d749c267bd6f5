"""Categorical fields to embeddings the way a sparse model needs them: one table, distinct ids only.

A click-through model has tens of id fields (user, item, category, tags) whose ids repeat heavily
within a batch. Looked up the obvious way, with one Keras ``Embedding`` per field, every field costs
one gather per parameter-server shard per step and every duplicate id is fetched and updated again.
Measured with ``bench/ctr.py`` on a Criteo-shaped DeepFM under plain TF's ParameterServerStrategy
(26 fields, 4.69M ids, batch 1024, where 60% of a batch's ids are repeats): deduplicating the ids
before the lookup cut the CPU per example by 34%, and so did one table for all fields; this layer does
both: every field's ids are offset into one table, ``tf.unique`` runs over the whole batch, and one
``embedding_lookup`` fetches each distinct row once (one gather per shard of the table). The
gradient is then an ``IndexedSlices`` of the distinct rows, which sparse optimizers (Adagrad)
apply as a scatter.

Under ``MultiWorkerMirroredStrategy`` (allreduce mode) the layer looks up the worker's own copy of
the mirrored table: ``tf.nn.embedding_lookup`` and ``tf.gather`` read a mirrored variable whole, as a
tensor, on every step (measured, a 4M x 16 table, tf_keras: 49 ms of CPU a step against 8 ms without
a strategy; looking up the own copy, with a row-wise optimizer, 9 ms: ``bench/README.md``).

Strings are hashed inside the layer (``tf.strings.to_hash_bucket_fast``), so an exported model takes
the raw values a serving system sends, and nothing has to ship a vocabulary: under
``ParameterServerStrategy`` a ``StringLookup`` vocabulary becomes a table copied to every worker.
:func:`hash_ids` is the same function for an input pipeline that wants the ids before the model.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Mapping

COMBINERS = ("mean", "sum")


def default_keras():
    """The Keras the training process trains with: tf_keras when ``TF_USE_LEGACY_KERAS=1`` (PS mode
    sets it), Keras 3 otherwise."""
    if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
        import tf_keras

        return tf_keras
    import keras

    return keras


def hash_ids(values, buckets: int):
    """Ids in ``[0, buckets)`` for ``values``, exactly as :func:`FieldEmbeddings` computes them.

    Strings (or bytes) are hashed with ``tf.strings.to_hash_bucket_fast`` (FarmHash: the same id on
    every machine and TF version); integers are taken modulo ``buckets``. Works on dense tensors and
    ``tf.RaggedTensor``; returns int64 of the same shape.

        ds = ctx.dataset("train").map(lambda x, y: ({**x, "tags": elearn.hash_ids(x["tags"], 10_000)}, y))
    """
    import tensorflow as tf

    if isinstance(values, tf.RaggedTensor):
        return values.with_flat_values(hash_ids(values.flat_values, buckets))
    values = tf.convert_to_tensor(values)
    if values.dtype == tf.string:
        return tf.strings.to_hash_bucket_fast(values, buckets)
    if not values.dtype.is_integer:
        raise TypeError(f"hash_ids takes strings or integers, not {values.dtype.name}: cast float ids "
                        "to int64 first (ids are labels, not amounts)")
    return tf.math.floormod(tf.cast(values, tf.int64), tf.constant(buckets, tf.int64))


def FieldEmbeddings(fields: Mapping[str, int], dim: int, *, combiner: str = "mean", keras: Any = None,
                    name: str | None = None):
    """A Keras layer: a dict of categorical fields -> ``[batch, len(fields), dim]`` embeddings.

    ``fields`` maps each field's name (its key in the inputs) to its number of hash buckets (the
    table's rows for that field); the output's second axis follows that order. Each field's input
    may be

    - single-valued: int ids or strings, ``[batch]`` or ``[batch, 1]``;
    - multi-valued (tags, recent items): ``[batch, k]`` padded (``""`` or a negative id is missing)
      or a ``tf.RaggedTensor`` ``[batch, None]`` (``ctx.dataset(..., ragged=True)``), pooled over the
      row's values with ``combiner`` (``"mean"`` or ``"sum"``); a row with no value embeds to zeros.
      The feed pads ``array<long>`` columns with 0, an id: feed them with ``ragged=True``.

    Strings are hashed and integers taken modulo the field's buckets (:func:`hash_ids`). All fields
    share one table of ``sum(fields.values())`` rows, each field at its own offset, and a batch looks
    up each distinct row once; under ``ParameterServerStrategy`` the table is sharded by the job's
    ``variable_partitioner`` like any big variable. ``keras`` is the Keras module of the model
    (``ctx.keras``); by default tf_keras in PS mode and Keras 3 otherwise. For a first-order (wide)
    term, a second layer with ``dim=1``.

        emb = elearn.FieldEmbeddings({"user": 1_000_000, "item": 100_000, "tags": 10_000}, 16,
                                     keras=ctx.keras)
        vectors = emb({"user": user_ids, "item": item_ids, "tags": tag_strings})   # [b, 3, 16]
    """
    if not fields:
        raise ValueError("FieldEmbeddings needs at least one field")
    bad = {k: v for k, v in fields.items() if not isinstance(v, int) or v < 1}
    if bad:
        raise ValueError(f"FieldEmbeddings: buckets must be positive integers, got {bad}")
    if combiner not in COMBINERS:
        raise ValueError(f"FieldEmbeddings: combiner {combiner!r} is not one of {', '.join(COMBINERS)}")
    layer = _layer_class(keras or default_keras())
    return layer(fields=dict(fields), dim=int(dim), combiner=combiner, name=name)


@functools.lru_cache(maxsize=None)
def _layer_class(keras):
    import tensorflow as tf

    class FieldEmbeddingsLayer(keras.layers.Layer):
        looks_up_own_copy = True   # elearn.train.optimizers: no whole-table read under a mirrored strategy

        def __init__(self, fields: dict, dim: int, combiner: str = "mean", **kwargs):
            super().__init__(**kwargs)
            self.fields, self.dim, self.combiner = dict(fields), dim, combiner
            self.offsets, start = [], 0
            for buckets in self.fields.values():
                self.offsets.append(start)
                start += buckets
            self.rows = start

        def build(self, input_shape=None):
            # Keras's Embedding default, so swapping this layer in for per-field Embeddings
            # changes the lookups, not the model.
            self.table = self.add_weight(name="table", shape=(self.rows, self.dim),
                                         initializer=keras.initializers.RandomUniform(-0.05, 0.05))
            super().build(input_shape)

        def call(self, inputs):
            missing = [f for f in self.fields if f not in inputs]
            if missing:
                raise KeyError(f"FieldEmbeddings: no input for field(s) {missing}; got {sorted(inputs)}")
            batch = None
            ids, segments = [], []
            for number, (field, buckets) in enumerate(self.fields.items()):
                values, rows, size = _flatten(inputs[field])
                batch = size if batch is None else batch
                ids.append(hash_ids(values, buckets) + self.offsets[number])
                segments.append(rows + number * batch)
            ids, segments = tf.concat(ids, 0), tf.concat(segments, 0)
            distinct, where = tf.unique(ids)
            vectors = tf.gather(tf.nn.embedding_lookup(_own_copy(self.table), distinct), where)
            cells = len(self.fields) * batch
            pooled = tf.math.unsorted_segment_sum(vectors, segments, cells)
            if self.combiner == "mean":
                counts = tf.math.unsorted_segment_sum(tf.ones_like(segments, vectors.dtype), segments, cells)
                pooled = pooled / tf.maximum(counts, 1.0)[:, None]
            return tf.transpose(tf.reshape(pooled, [len(self.fields), batch, self.dim]), [1, 0, 2])

        def compute_output_shape(self, input_shape):
            return (None, len(self.fields), self.dim)

        def get_config(self):
            return {**super().get_config(), "fields": self.fields, "dim": self.dim,
                    "combiner": self.combiner}

    FieldEmbeddingsLayer.__name__ = FieldEmbeddingsLayer.__qualname__ = "FieldEmbeddings"
    return FieldEmbeddingsLayer


def _own_copy(table):
    """The worker's own copy of a mirrored table, or ``table`` itself when it is not mirrored.

    ``embedding_lookup`` converts a ``MirroredVariable`` (not a ``BaseResourceVariable``) to a tensor,
    a read of the whole table, before gathering; the copy of the replica that reads it is a plain
    resource variable, gathered row by row. The gradient still reaches the mirrored variable: the
    tape watches a mirrored variable through the copy its replica reads, as it does for Keras's own
    layers. ``_get_on_device_or_primary`` is how TensorFlow's own distributed code picks that copy
    (there is no public name for it); a table without it (plain, or sharded under
    ParameterServerStrategy) is looked up as it is."""
    variable = getattr(table, "_value", table)   # a Keras 3 variable wraps its tf.Variable
    own = getattr(variable, "_get_on_device_or_primary", None)
    return own() if own is not None else table


def _flatten(x):
    """``(values, row of each value, batch size)`` of one field's input, missing values dropped."""
    import tensorflow as tf

    if isinstance(x, tf.RaggedTensor):
        x = x.merge_dims(1, -1) if x.ragged_rank > 1 else x
        return x.flat_values, x.value_rowids(), tf.cast(x.nrows(), tf.int64)
    if isinstance(x, tf.SparseTensor):
        return x.values, x.indices[:, 0], x.dense_shape[0]
    x = tf.convert_to_tensor(x)
    if x.shape.rank == 1:
        x = x[:, None]
    elif x.shape.rank != 2:
        raise ValueError(f"FieldEmbeddings: a field's input is [batch] or [batch, k], got shape {x.shape}")
    shape = tf.shape(x, out_type=tf.int64)
    rows = tf.reshape(tf.tile(tf.range(shape[0])[:, None], [1, shape[1]]), [-1])
    values = tf.reshape(x, [-1])
    keep = tf.not_equal(values, "") if x.dtype == tf.string else tf.greater_equal(values, 0)
    return tf.boolean_mask(values, keep), tf.boolean_mask(rows, keep), shape[0]
