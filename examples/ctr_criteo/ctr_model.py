"""DeepFM over Criteo's fields, for tf_keras (the example trains with it in both modes) or Keras 3.

Inputs, as the feed delivers them (one row per click-log line):

    counts   float32 [b, 13]      log1p(max(I_j, 0)), 0 where missing
    C1..C26  string  [b]          the raw hash strings (or the "rare"/"missing" tokens)
    tags     string  [b, k]       the row's tags, padded with "" (empty: no tags)

The model takes strings, not ids: ``elearn.FieldEmbeddings`` hashes each field's strings into
that field's buckets inside the layer, so the exported model scores raw values and no vocabulary
travels with it. Two such layers hold all 27 fields' rows in one table each: a ``dim``-wide
embedding per value and a first-order weight per value (the same layer with ``dim=1``). The tags
are pooled (the mean of the row's tags).

    logit = b + w . z(counts) + sum_f w_f            first order
          + sum_{f<g} <v_f, v_g>                     FM: every pair of fields
          + MLP([v_1 .. v_27, z(counts)])            deep part
    p     = sigmoid(logit)

``z`` standardises the log counts with the training set's mean and standard deviation (given,
computed in Spark), so the exported model carries them.
"""
from __future__ import annotations

INTS = [f"I{i}" for i in range(1, 14)]
CATS = [f"C{i}" for i in range(1, 27)]
LABEL, TAGS, COUNTS = "label", "tags", "counts"
FIELDS = CATS + [TAGS]
INPUTS = [COUNTS, *CATS, TAGS]

# Hash buckets per field at buckets_scale=1, from each field's number of distinct values in the
# Criteo Kaggle release: about 16 per value for the fields of up to ~3,000 values (few collisions),
# 2 to 9 per value for those of 5,000 to 300,000, one per value for C4 (2.2M) and 4M for each of
# the four fields of 5.5M to 10.1M values, 100,000 for the tags: 20.4M rows per table. With dim 16
# that is 1.2 GiB of embeddings, as much again of Adagrad accumulators and 1/16 of both for the
# first-order weights, sharded over the parameter servers.
BUCKETS = {"C1": 24_000, "C2": 10_000, "C3": 4_000_000, "C4": 2_200_000, "C5": 5_000, "C6": 400,
           "C7": 50_000, "C8": 10_000, "C9": 64, "C10": 200_000, "C11": 50_000, "C12": 4_000_000,
           "C13": 50_000, "C14": 400, "C15": 60_000, "C16": 4_000_000, "C17": 160, "C18": 50_000,
           "C19": 35_000, "C20": 64, "C21": 4_000_000, "C22": 300, "C23": 240, "C24": 1_000_000,
           "C25": 1_700, "C26": 600_000, TAGS: 100_000}
MIN_BUCKETS = 64


def buckets(scale: float = 1.0) -> dict:
    """Buckets per field, each scaled by ``scale`` (at least ``MIN_BUCKETS``), in field order."""
    return {f: max(MIN_BUCKETS, int(round(BUCKETS[f] * scale))) for f in FIELDS}


def _layers(keras):
    import tensorflow as tf

    class FMInteraction(keras.layers.Layer):
        """All pairwise dot products of the field vectors, [b, F, d] -> [b, 1], in O(F d) by
        0.5 * sum_d [(sum_f v_fd)^2 - sum_f v_fd^2]."""

        def call(self, v):
            total = tf.reduce_sum(v, axis=1)
            return 0.5 * tf.reduce_sum(total * total - tf.reduce_sum(v * v, axis=1), axis=1, keepdims=True)

    class SumFields(keras.layers.Layer):
        """The first-order weights of the row's values summed, [b, F, 1] -> [b, 1]."""

        def call(self, w):
            return tf.reduce_sum(w, axis=1)

    return FMInteraction, SumFields


def build_deepfm(keras, field_buckets: dict, count_mean, count_std, dim: int = 16, hidden=(256, 128)):
    """The DeepFM as a functional ``keras`` model over ``INPUTS``, not compiled.

    ``field_buckets``: buckets per field of ``FIELDS`` (``buckets(scale)``); ``count_mean`` and
    ``count_std``: the 13 log counts' training mean and standard deviation.
    """
    import elearn

    FMInteraction, SumFields = _layers(keras)
    L = keras.layers
    inputs = {COUNTS: keras.Input(shape=(len(INTS),), dtype="float32", name=COUNTS)}
    inputs.update({c: keras.Input(shape=(), dtype="string", name=c) for c in CATS})
    inputs[TAGS] = keras.Input(shape=(None,), dtype="string", name=TAGS)
    fields = {f: int(field_buckets[f]) for f in FIELDS}
    by_field = {f: inputs[f] for f in FIELDS}

    v = elearn.FieldEmbeddings(fields, dim, keras=keras, name="embeddings")(by_field)     # [b, 27, dim]
    w = elearn.FieldEmbeddings(fields, 1, keras=keras, name="weights")(by_field)         # [b, 27, 1]
    z = L.Normalization(mean=list(count_mean), variance=[s * s or 1.0 for s in count_std],
                        name="standardise")(inputs[COUNTS])

    first = L.Add(name="first_order")([L.Dense(1, name="count_weights")(z), SumFields(name="value_weights")(w)])
    pairs = FMInteraction(name="fm")(v)
    deep = L.Concatenate(name="deep_in")([L.Reshape((len(FIELDS) * dim,), name="flat")(v), z])
    for i, units in enumerate(hidden):
        deep = L.Dense(units, activation="relu", name=f"deep_{i}")(deep)
    deep = L.Dense(1, name="deep_out")(deep)
    logit = L.Add(name="logit")([first, pairs, deep])
    return keras.Model(inputs, L.Activation("sigmoid", name="ctr")(logit), name="deepfm")
