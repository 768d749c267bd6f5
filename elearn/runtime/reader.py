"""The native reader: spool chunks into a ``tf.data.Dataset`` with TensorFlow ops only.

Everything here is graph-safe: in PS mode the dataset function is traced on the coordinator and runs
on each worker, so the worker's spool directory and chunk count arrive as tensors (looked up by
``experimental_get_current_worker_index()``), never as Python values computed on the coordinator.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import tensorflow as tf

from elearn.runtime.feedspec import BLOCKS, FeedColumn

_TF_DTYPES = {"float16": tf.float16, "float32": tf.float32, "float64": tf.float64,
              "int8": tf.int8, "int16": tf.int16, "int32": tf.int32, "int64": tf.int64,
              "uint8": tf.uint8, "bool": tf.bool, "object": tf.string}


def chunk_paths(directory, chunks) -> tf.data.Dataset:
    index = tf.data.Dataset.range(tf.cast(chunks, tf.int64))
    return index.map(lambda k: tf.strings.join(
        [directory, "/chunk-", tf.strings.as_string(k, width=6, fill="0"), ".spool"]))


def _parse_chunk(columns: Sequence[FeedColumn], wanted: Sequence[str], fixed: Mapping[str, int],
                 pad: Mapping[str, int], ragged: bool, fill: Mapping[str, object]):
    nblocks = sum(BLOCKS[c.kind] for c in columns)
    head = 8 * (nblocks + 1)
    first_block = {}
    i = 0
    for c in columns:
        first_block[c.name] = i
        i += BLOCKS[c.kind]

    def parse(path):
        blob = tf.io.read_file(path)
        header = tf.io.decode_raw(tf.strings.substr(blob, 0, head), tf.int64)
        n, lengths = header[0], header[1:]
        starts = head + tf.concat([[0], tf.cumsum(lengths)[:-1]], 0)

        def block(j, dtype):
            return tf.io.parse_tensor(tf.strings.substr(blob, starts[j], lengths[j]), dtype)

        out = {}
        for c in columns:
            if c.name not in wanted:
                continue
            j, dtype = first_block[c.name], _TF_DTYPES[c.dtype]
            values = block(j, dtype)
            valid = block(j + BLOCKS[c.kind] - 1, tf.bool)
            if c.kind == "sparse":
                # Travels as two ragged tensors (column ids, values) that shuffle and rebatch like
                # any list column; becomes a SparseTensor once batched (see spool_dataset).
                values = block(j + 1, dtype)
                splits = block(j + 2, tf.int64)
                values.set_shape([None])
                splits.set_shape([None])
                ids = block(j, tf.int64)
                ids.set_shape([None])
                out[c.name] = (tf.RaggedTensor.from_row_splits(ids, splits, validate=False),
                               tf.RaggedTensor.from_row_splits(values, splits, validate=False))
            elif c.kind == "list":
                splits = block(j + 1, tf.int64)
                splits.set_shape([None])
                values.set_shape([None])
                filler = tf.constant(fill[c.name], dtype) if c.name in fill else None
                if filler is not None:
                    element_valid = block(j + 2, tf.bool)
                    values = tf.cond(tf.size(element_valid) > 0,
                                     lambda v=values, ev=element_valid, f=filler: tf.where(ev, v, f),
                                     lambda v=values: v)
                if c.name in fixed and filler is not None:
                    # A null row holds no values: it becomes a full row of the fill value.
                    out[c.name] = tf.RaggedTensor.from_row_splits(values, splits, validate=False) \
                        .to_tensor(default_value=filler, shape=[None, fixed[c.name]])
                elif c.name in fixed:
                    out[c.name] = tf.reshape(values, [-1, fixed[c.name]])
                else:
                    r = tf.RaggedTensor.from_row_splits(values, splits, validate=False)
                    out[c.name] = r if ragged else r.to_tensor(shape=[None, pad[c.name]])
            else:
                values.set_shape([None])
                if c.name in fill:
                    valid = tf.cond(tf.size(valid) > 0, lambda v=valid: v,
                                    lambda: tf.ones([n], tf.bool))
                    values = tf.where(valid, values, tf.constant(fill[c.name], dtype))
                out[c.name] = values
        return n, out

    return parse


def spool_dataset(directory, chunks, columns: Sequence[FeedColumn], *, features=None, label=None,
                  batch_size: int = 32, shuffle: bool = True, seed: int | None = None,
                  repeat: bool = False, fill: Mapping[str, object] | None = None,
                  ragged: bool = False, list_lengths: Mapping[str, Sequence[int]] | None = None,
                  sizes: Mapping[str, int] | None = None, dense: Sequence[str] = (),
                  drop_remainder: bool = False) -> tf.data.Dataset:
    """A batched dataset of ``(features_dict, label)`` (or ``features_dict`` without a label).

    ``list_lengths[name] = (min, max)`` over the whole dataset decides how list columns come out:
    equal lengths give a dense ``[batch, k]`` tensor; otherwise padded with zeros to the longest
    list, or a ``tf.RaggedTensor`` when ``ragged=True``. Sparse vector columns come out as
    ``tf.SparseTensor`` of shape ``[batch, sizes[name]]``, or dense when named in ``dense``.
    """
    fill = dict(fill or {})
    names = [c.name for c in columns]
    if features is None:
        features = [n for n in names if n != label]
    wanted = list(features) + ([label] if label else [])
    list_lengths = list_lengths or {}
    fixed, pad = {}, {}
    for c in columns:
        if c.kind == "list" and c.name in wanted:
            lo, hi = list_lengths.get(c.name, (None, None))
            if lo is not None and lo == hi:
                fixed[c.name] = int(hi)
            else:
                pad[c.name] = int(hi or 0)
    sizes = dict(sizes or {})
    sparse = [c.name for c in columns if c.kind == "sparse" and c.name in wanted]

    paths = chunk_paths(directory, chunks)
    if shuffle:
        paths = paths.shuffle(4096, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        paths = paths.repeat()
    parse = _parse_chunk(columns, wanted, fixed, pad, ragged, fill)

    def chunk(path):
        # One map per chunk does everything per-row work needs (parse, permute, pick the
        # columns): per-batch stages cost a fixed overhead per batch, which dominates at small
        # batch sizes.
        n, cols = parse(path)
        if shuffle:
            order = tf.random.shuffle(tf.range(n), seed=seed)
            cols = tf.nest.map_structure(lambda v: tf.gather(v, order), cols)
        picked = {k: cols[k] for k in features}
        return (picked, cols[label]) if label else picked

    # In order even when shuffling (the order is already random): out of order, a chunk of the next
    # pass over the spool could overtake one of this pass and break exactly-once within an epoch.
    ds = paths.map(chunk, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # rebatch slices and joins whole chunks (ragged components included): no per-row ops.
    ds = ds.rebatch(batch_size, drop_remainder=drop_remainder)
    if sparse:
        def densify(cols):
            cols = dict(cols)
            for name in sparse:
                if name not in cols:
                    continue
                ids, values = cols[name]
                index = tf.stack([ids.value_rowids(), ids.flat_values], axis=1)
                shape = tf.stack([ids.nrows(), tf.constant(int(sizes.get(name, 0)), tf.int64)])
                st = tf.sparse.SparseTensor(index, values.flat_values, shape)
                if name in dense:
                    st = tf.sparse.to_dense(st)
                    st.set_shape([None, int(sizes.get(name, 0))])
                cols[name] = st
            return cols

        def to_sparse(*element):
            if label:
                x, y = element
                return densify(x), (densify({label: y})[label] if label in sparse else y)
            return densify(element[0])

        ds = ds.map(to_sparse, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
