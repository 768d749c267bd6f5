"""A Criteo-shaped DeepFM and its synthetic data, for bench/ctr.py and the probes beside it.

The model is written once for both Keras generations: pass the module (``tf_keras`` or ``keras``).
13 float features, 26 int64 id fields over 4 x 1M, 6 x 100k, 8 x 10k and 8 x 1k buckets (4.69M
ids at ``scale=1``), an embedding of 16 plus a first-order weight per id, an FM interaction over
the 26 field embeddings, an MLP of 256-128 over the concatenated embeddings and floats, a sigmoid
output. Layers that need more than Keras's stock ones use TensorFlow ops in ``call``, which both
Keras generations run on the TensorFlow backend.

The data imitate click logs: ids are Zipf-distributed (a few ids carry most rows, as in real CTR
logs, so most ids of a batch repeat) and scattered over each field's bucket range by a fixed
permutation (hashed ids are not clustered at the low end, so every parameter server shard sees
traffic); labels are drawn from a planted teacher (first-order weights, a rank-4 FM over the
fields and a linear term in the floats), so AUC is meaningful and the teacher's own AUC on the
held-out rows is the ceiling.
"""
from __future__ import annotations

import os

import numpy as np

FLOATS = [f"I{i}" for i in range(1, 14)]
FIELDS = [f"C{i}" for i in range(1, 27)]
LABEL = "label"
BUCKETS = [1_000_000] * 4 + [100_000] * 6 + [10_000] * 8 + [1_000] * 8
DIM = 16
ZIPF = 1.1            # P(rank k) ~ k^-ZIPF over a field's buckets
TEACHER_RANK = 4


def vocab_sizes(scale: float = 1.0) -> list[int]:
    return [max(10, int(round(b * scale))) for b in BUCKETS]


def table_bytes(scale: float = 1.0) -> int:
    """Bytes of the model's id tables (embedding + first-order weight per id, float32)."""
    return sum(vocab_sizes(scale)) * (DIM + 1) * 4


# -- data ----------------------------------------------------------------------------------------
def _zipf_ids(rng, vocab: int, n: int) -> np.ndarray:
    ranks = np.arange(1, vocab + 1, dtype=np.float64)
    cdf = np.cumsum(ranks ** -ZIPF)
    cdf /= cdf[-1]
    rank = np.minimum(np.searchsorted(cdf, rng.random(n)), vocab - 1)
    return rng.permutation(vocab)[rank].astype(np.int64)


def make_data(rows: int, holdout: int, scale: float = 1.0, seed: int = 7):
    """(train, holdout, teacher_auc): dicts of numpy columns (FLOATS float32, FIELDS int64, LABEL
    float32), drawn together so both come from one distribution."""
    rng = np.random.default_rng(seed)
    n = rows + holdout
    cols: dict = {}
    raw = rng.lognormal(0.0, 1.5, (n, len(FLOATS)))
    floats = np.log1p(raw).astype(np.float32)            # the usual log transform of Criteo counts
    for i, f in enumerate(FLOATS):
        cols[f] = floats[:, i]
    logit = (floats - floats.mean(0)) @ rng.normal(0, 0.15, len(FLOATS))
    pair = np.zeros((n, TEACHER_RANK))
    square = np.zeros(n)
    for f, vocab in zip(FIELDS, vocab_sizes(scale)):
        ids = _zipf_ids(rng, vocab, n)
        cols[f] = ids
        # The teacher's weights live on ids; only the ids drawn matter, so draw per used id.
        used, where = np.unique(ids, return_inverse=True)
        w1 = rng.normal(0, 0.3, len(used))
        v = rng.normal(0, 0.1, (len(used), TEACHER_RANK))
        logit += w1[where]
        pair += v[where]
        square += (v[where] ** 2).sum(1)
    logit += 0.5 * ((pair ** 2).sum(1) - square)
    logit = (logit - logit.mean()) / logit.std() * 1.5 - 1.2   # about a quarter of rows click
    p = 1 / (1 + np.exp(-logit))
    cols[LABEL] = (rng.random(n) < p).astype(np.float32)
    train = {k: v[:rows] for k, v in cols.items()}
    test = {k: v[rows:] for k, v in cols.items()}
    return train, test, auc(test[LABEL], p[rows:])


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by ranks (Mann-Whitney), ties averaged."""
    labels = np.asarray(labels).ravel() > 0.5
    scores = np.asarray(scores, np.float64).ravel()
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks of ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    pos = labels.sum()
    neg = len(labels) - pos
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def cached_data(directory: str, rows: int, holdout: int, scale: float = 1.0, seed: int = 7):
    """make_data's rows written once under ``directory`` (``train.parquet`` for Spark,
    ``train.npz``/``test.npz`` for the plain runs); returns (paths, teacher_auc)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(directory, exist_ok=True)
    meta = os.path.join(directory, "meta.json")
    key = {"rows": rows, "holdout": holdout, "scale": scale, "seed": seed}
    paths = {"parquet": os.path.join(directory, "train.parquet"),
             "train": os.path.join(directory, "train.npz"), "test": os.path.join(directory, "test.npz")}
    if os.path.exists(meta):
        with open(meta) as f:
            saved = json.load(f)
        if saved["key"] == key:
            return paths, saved["teacher_auc"]
    train, test, teacher = make_data(rows, holdout, scale, seed)
    np.savez(paths["train"], **train)
    np.savez(paths["test"], **test)
    # Several row groups, so Spark reads the file in parallel tasks.
    pq.write_table(pa.table(train), paths["parquet"], row_group_size=50_000)
    with open(meta, "w") as f:
        json.dump({"key": key, "teacher_auc": teacher}, f)
    return paths, teacher


def load(path: str) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


# -- model ---------------------------------------------------------------------------------------
def make_optimizer(keras, name: str = "adagrad", lr: float | None = None):
    """``adagrad`` (default, 0.05), ``adagrad_legacy``, ``adam``, ``ftrl``, ``ftrl_legacy``, ``sgd``."""
    opt = keras.optimizers
    legacy = getattr(opt, "legacy", None)
    table = {
        "adagrad": (lambda r: opt.Adagrad(r), 0.05),
        "adagrad_legacy": (lambda r: legacy.Adagrad(r), 0.05),
        "adam": (lambda r: opt.Adam(r), 0.001),
        "ftrl": (lambda r: opt.Ftrl(r), 0.05),
        "ftrl_legacy": (lambda r: legacy.Ftrl(r), 0.05),
        "sgd": (lambda r: opt.SGD(r), 0.5),
    }
    if name not in table:
        raise SystemExit(f"unknown optimizer {name!r}; choose from {', '.join(table)}")
    make, default = table[name]
    return make(lr if lr is not None else default)


def _layers(keras):
    import tensorflow as tf

    class Stack(keras.layers.Layer):
        """A list of [batch, d] tensors -> [batch, len, d]."""

        def call(self, xs):
            return tf.stack(xs, axis=1)

    class FM(keras.layers.Layer):
        """Second-order FM term over [batch, fields, dim]: 0.5 * sum((sum v)^2 - sum v^2)."""

        def call(self, v):
            s = tf.reduce_sum(v, axis=1)
            return 0.5 * tf.reduce_sum(s * s - tf.reduce_sum(v * v, axis=1), axis=1, keepdims=True)

    class Sum(keras.layers.Layer):
        """Sum of every term of every input, per row -> [batch, 1]."""

        def call(self, xs):
            return tf.add_n([tf.reduce_sum(tf.reshape(x, [tf.shape(x)[0], -1]), 1, keepdims=True)
                             for x in xs])

    class UniqueEmbedding(keras.layers.Layer):
        """An embedding table looked up once per distinct id of the batch (``tf.unique`` first).

        ``tf.nn.embedding_lookup`` gathers one row per id, duplicates included, on every shard of
        a sharded table; with skewed ids most of a batch's ids repeat."""

        def __init__(self, vocab, dim, dedup=True, local=False, **kw):
            super().__init__(**kw)
            self.vocab, self.dim, self.dedup, self.local = vocab, dim, dedup, local

        def build(self, shape):
            self.embeddings = self.add_weight(name="embeddings", shape=(self.vocab, self.dim),
                                              initializer=keras.initializers.RandomUniform(-0.05, 0.05))

        def call(self, ids):
            table = self.embeddings
            if self.local and hasattr(table, "_get_on_device_or_primary"):
                # A mirrored variable is not a resource variable to embedding_lookup, which then
                # reads the whole table as a tensor; its local copy is one.
                table = table._get_on_device_or_primary()
            if not self.dedup:
                return tf.nn.embedding_lookup(table, ids)
            flat = tf.reshape(ids, [-1])
            uniq, where = tf.unique(flat)
            rows = tf.nn.embedding_lookup(table, uniq)
            return tf.reshape(tf.gather(rows, where), tf.concat([tf.shape(ids), [self.dim]], 0))

    class Offset(keras.layers.Layer):
        """The fields' ids [batch] x 26 -> [batch, 26] ids into one table of all fields' rows."""

        def __init__(self, offsets, **kw):
            super().__init__(**kw)
            self.offsets = list(offsets)

        def call(self, xs):
            return tf.stack(xs, axis=1) + tf.constant(self.offsets, tf.int64)

    return Stack, FM, Sum, UniqueEmbedding, Offset


def build_model(keras, scale: float = 1.0, lookup: str = "keras", tables: str = "field"):
    """The DeepFM, not compiled. ``lookup``: ``keras`` (the stock Embedding layer), ``unique``
    (distinct ids looked up once), ``local`` / ``local-unique`` (under a mirrored strategy, look up
    the replica's own copy of the table), ``elearn`` (``elearn.FieldEmbeddings``: one table for all
    fields, distinct ids looked up once; ``tables`` does not apply). ``tables``: ``field`` (one table per field, as users write
    it) or ``one`` (all fields' rows in one table, ids offset per field: one lookup per step)."""
    Stack, FM, Sum, UniqueEmbedding, Offset = _layers(keras)
    L = keras.layers
    vocabs = vocab_sizes(scale)
    floats = {f: keras.Input(shape=(), name=f, dtype="float32") for f in FLOATS}
    ids = {f: keras.Input(shape=(), name=f, dtype="int64") for f in FIELDS}
    init = keras.initializers.RandomUniform(-0.05, 0.05)

    def table(vocab, dim, name):
        if lookup in ("unique", "local", "local-unique"):
            return UniqueEmbedding(vocab, dim, dedup=lookup != "local", local=lookup.startswith("local"),
                                   name=name)
        return L.Embedding(vocab, dim, embeddings_initializer=init, name=name)

    if lookup == "elearn":                                   # elearn.FieldEmbeddings: one table, deduplicated
        from elearn import FieldEmbeddings

        fields = dict(zip(FIELDS, vocabs))
        v = FieldEmbeddings(fields, DIM, keras=keras, name="emb")(ids)                 # [B, 26, 16]
        first = [FieldEmbeddings(fields, 1, keras=keras, name="w1")(ids)]              # [B, 26, 1]
    elif tables == "one":
        offsets = np.concatenate([[0], np.cumsum(vocabs)[:-1]]).tolist()
        all_ids = Offset(offsets, name="offset_ids")([ids[f] for f in FIELDS])      # [B, 26]
        v = table(sum(vocabs), DIM, "emb")(all_ids)                                 # [B, 26, 16]
        first = [table(sum(vocabs), 1, "w1")(all_ids)]                              # [B, 26, 1]
    else:
        embs = [table(n, DIM, f"emb_{f}")(ids[f]) for f, n in zip(FIELDS, vocabs)]
        first = [table(n, 1, f"w1_{f}")(ids[f]) for f, n in zip(FIELDS, vocabs)]
        v = Stack(name="stack")(embs)
    dense = L.Concatenate(name="floats")([L.Reshape((1,))(floats[f]) for f in FLOATS])
    linear = Sum(name="first_order")([L.Dense(1, name="w_floats")(dense)] + first)
    fm = FM(name="fm")(v)
    deep = L.Concatenate(name="deep_in")([L.Flatten()(v), dense])
    deep = L.Dense(256, activation="relu")(deep)
    deep = L.Dense(128, activation="relu")(deep)
    deep = L.Dense(1)(deep)
    logit = L.Add(name="logit")([linear, fm, deep])
    out = L.Activation("sigmoid", name="p")(logit)
    return keras.Model({**floats, **ids}, out)


def compile_model(keras, model, optimizer: str = "adagrad", steps_per_execution: int = 1, lr=None):
    model.compile(optimizer=make_optimizer(keras, optimizer, lr), loss="binary_crossentropy",
                  steps_per_execution=steps_per_execution)
    return model


def predict(model, columns: dict, batch: int = 8192) -> np.ndarray:
    """Scores of ``columns`` by calling the model batch by batch (works where ``predict`` does not:
    on a ParameterServerStrategy coordinator, under a multi-worker strategy)."""
    n = len(columns[LABEL])
    out = []
    for i in range(0, n, batch):
        x = {k: v[i:i + batch] for k, v in columns.items() if k != LABEL}
        out.append(np.asarray(model(x, training=False)).ravel())
    return np.concatenate(out)


def model_inputs(columns: dict) -> dict:
    return {k: v for k, v in columns.items() if k != LABEL}
