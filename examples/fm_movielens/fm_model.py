"""A second-order factorization machine over the MovieLens fields, for tf_keras or Keras 3.

Each field f (user, movie, genres, release-year bucket, age-at-rating, weekday) has a weight table
w_f and an embedding table V_f. For one rating with field vectors v_f (the genre field averages the
embeddings of the movie's genres):

    y = b + sum_f w_f + 1/2 * sum_d [ (sum_f v_fd)^2 - sum_f v_fd^2 ]

The last term is sum over pairs f<g of <v_f, v_g>, computed in O(fields x dim) by the
sum-of-squares identity. The embedding tables are ordinary variables, so under
``ParameterServerStrategy`` with a ``variable_partitioner`` the large ones (users, movies) are
sharded across the parameter servers.
"""
from __future__ import annotations

import tensorflow as tf

SCALAR_FIELDS = ["user_idx", "movie_idx", "year_idx", "age_idx", "weekday_idx"]
LIST_FIELDS = ["genre_ids"]             # id lists padded with 0; 0 is "no genre"
FIELDS = SCALAR_FIELDS + LIST_FIELDS


def build_fm(keras, vocab: dict, dim: int = 16, l2: float = 2e-5, mean_rating: float = 3.5):
    """The FM as a functional ``keras.Model`` taking a dict of int32 inputs named as ``FIELDS``.

    ``vocab[field]`` is the number of ids of that field (max id + 1); ``l2`` penalises the
    embeddings and weights of the ids in each batch (the usual FM regulariser: rare ids are
    penalised as often as they occur, not on every step).
    """
    missing = [f for f in FIELDS if f not in vocab]
    if missing:
        raise ValueError(f"vocab has no size for {missing}; give max id + 1 for every field")

    class FMInteractions(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            init = keras.initializers.RandomNormal(stddev=0.01, seed=11)
            self.tables = {}
            for f in FIELDS:
                self.tables[f] = (
                    self.add_weight(name=f"{f}_weight", shape=(vocab[f], 1), initializer="zeros"),
                    self.add_weight(name=f"{f}_embedding", shape=(vocab[f], dim), initializer=init))
            self.bias = self.add_weight(name="bias", shape=(),
                                        initializer=keras.initializers.Constant(mean_rating))

        def call(self, inputs):
            linear, vectors, penalty = [], [], []
            for f in SCALAR_FIELDS:
                w, v = self.tables[f]
                ids = tf.cast(tf.reshape(inputs[f], [-1]), tf.int32)
                wf, vf = tf.nn.embedding_lookup(w, ids)[:, 0], tf.nn.embedding_lookup(v, ids)
                linear.append(wf)
                vectors.append(vf)
                penalty += [tf.reduce_sum(tf.square(vf), 1), tf.square(wf)]
            for f in LIST_FIELDS:
                w, v = self.tables[f]
                ids = tf.cast(inputs[f], tf.int32)
                mask = tf.cast(ids > 0, tf.float32)
                count = tf.maximum(tf.reduce_sum(mask, 1, keepdims=True), 1.0)
                share = mask / count                                   # mean over the movie's genres
                wf = tf.reduce_sum(tf.nn.embedding_lookup(w, ids)[:, :, 0] * share, 1)
                vf = tf.reduce_sum(tf.nn.embedding_lookup(v, ids) * share[:, :, None], 1)
                linear.append(wf)
                vectors.append(vf)
                penalty += [tf.reduce_sum(tf.square(vf), 1), tf.square(wf)]
            stacked = tf.stack(vectors, 1)                                   # [batch, fields, dim]
            pairs = 0.5 * tf.reduce_sum(tf.square(tf.reduce_sum(stacked, 1))
                                        - tf.reduce_sum(tf.square(stacked), 1), 1)
            self.add_loss(l2 * tf.reduce_mean(tf.add_n(penalty)))
            return self.bias + tf.add_n(linear) + pairs

    inputs = {f: keras.Input(shape=(), dtype="int32", name=f) for f in SCALAR_FIELDS}
    inputs.update({f: keras.Input(shape=(None,), dtype="int32", name=f) for f in LIST_FIELDS})
    rating = FMInteractions(name="fm")(inputs)
    return keras.Model(inputs, rating, name="movielens_fm")


def rmse(y, pred) -> float:
    import numpy as np

    y, pred = np.asarray(y, np.float64).ravel(), np.asarray(pred, np.float64).ravel()
    return float(np.sqrt(np.mean((y - pred) ** 2)))
