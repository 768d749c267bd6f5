"""The native reader: spool chunks into a ``tf.data.Dataset`` with TensorFlow ops only.

Everything here is graph-safe: in PS mode the dataset function is traced on the coordinator and runs
on each worker, so the worker's spool directory and chunk count arrive as tensors (looked up by
``experimental_get_current_worker_index()``), never as Python values computed on the coordinator.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import tensorflow as tf

from elearn.feed.columns import BLOCKS, LISTS, FeedColumn

_TF_DTYPES = {"float16": tf.float16, "float32": tf.float32, "float64": tf.float64,
              "int8": tf.int8, "int16": tf.int16, "int32": tf.int32, "int64": tf.int64,
              "uint8": tf.uint8, "bool": tf.bool, "object": tf.string}


def chunk_paths(directory, chunks) -> tf.data.Dataset:
    index = tf.data.Dataset.range(tf.cast(chunks, tf.int64))
    return index.map(lambda k: tf.strings.join(
        [directory, "/chunk-", tf.strings.as_string(k, width=6, fill="0"), ".spool"]))


class _Chunk:
    """One chunk file's contents and where its blocks are (tensors: built anew for every chunk)."""

    def __init__(self, contents, nblocks: int):
        head = 8 * (nblocks + 1)
        self.contents = contents
        header = tf.io.decode_raw(tf.strings.substr(contents, 0, head), tf.int64)
        rows, lengths = tf.split(header, [1, nblocks])
        starts = head + tf.cumsum(lengths, exclusive=True)
        # One op hands out every block's position: fewer graph nodes to trace and instantiate.
        self.rows = rows[0]
        self.starts = tf.unstack(starts, num=nblocks)
        self.lengths = tf.unstack(lengths, num=nblocks)

    def block(self, j: int, dtype):
        raw = tf.strings.substr(self.contents, self.starts[j], self.lengths[j])
        return tf.io.decode_raw(raw, dtype)

    def valid(self, j: int):
        """Block ``j`` as a row validity mask: an empty block means no nulls."""
        valid = self.block(j, tf.bool)
        return tf.cond(tf.size(valid) > 0, lambda: valid, lambda: tf.ones([self.rows], tf.bool))

    def strings(self, j: int, order=None):
        """Block ``j`` holds offsets into block ``j + 1``: one vectorised substr of the file's
        contents cuts out every string, with no per-string framing to parse. With ``order`` the
        strings come out in that order: permuting their positions is cheaper than the strings."""
        offsets = self.block(j, tf.int64)
        positions, lengths = self.starts[j + 1] + offsets[:-1], offsets[1:] - offsets[:-1]
        return tf.strings.substr(self.contents, _permuted(positions, order),
                                 _permuted(lengths, order))

    def row_splits(self, j: int):
        """A list column's shape block as row splits: it holds ``[k]`` when every row of the chunk
        has ``k`` values, row splits otherwise (an empty chunk always has splits ``[0]``)."""
        shape, n = self.block(j, tf.int64), self.rows
        return tf.cond(tf.size(shape, out_type=tf.int64) == n + 1, lambda: shape,
                       lambda: tf.range(n + 1) * shape[0])


def _keyed(ds: tf.data.Dataset, shuffle: bool, seed: int | None) -> tf.data.Dataset:
    """``ds`` paired with a random key per element when shuffling: the key seeds that element's
    row permutation (a stateless shuffle), so that ``seed`` makes the whole order repeatable
    however the parallel map schedules its calls."""
    if not shuffle:
        return ds
    return tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=seed)))


def _order(rows, key):
    """A random permutation of ``range(rows)`` decided by ``key`` alone."""
    return tf.random.experimental.stateless_shuffle(
        tf.range(rows), seed=tf.stack([key, tf.constant(0, tf.int64)]))


def _mix_window(element, key):
    """Chunks batched by ``ragged_batch`` -> one element of all their rows, in a random order."""
    joined = tf.nest.map_structure(lambda t: t.merge_dims(0, 1), element)
    first = tf.nest.flatten(joined, expand_composites=False)[0]
    rows = first.nrows() if isinstance(first, tf.RaggedTensor) else tf.shape(first, out_type=tf.int64)[0]
    return _permuted(joined, _order(rows, key))


def _permuted(values, order):
    """``values`` (a tensor, ragged tensor or a tuple of them) in row order ``order``, if any."""
    if order is None:
        return values
    return tf.nest.map_structure(lambda v: tf.gather(v, order), values)


def _parse_chunk(columns: Sequence[FeedColumn], wanted: Sequence[str], fixed: Mapping[str, int],
                 pad: Mapping[str, int], ragged: bool, fill: Mapping[str, object],
                 shuffle: bool = False):
    """A function from a chunk's path (and its shuffle key) to ``{column: tensor}``: the wanted
    columns, in a random permutation of the chunk's rows when ``shuffle``."""
    nblocks = sum(BLOCKS[c.kind] for c in columns)
    first_block = {}
    i = 0
    for c in columns:
        first_block[c.name] = i
        i += BLOCKS[c.kind]

    def parse(path, key=None):
        chunk = _Chunk(tf.io.read_file(path), nblocks)
        order = _order(chunk.rows, key) if shuffle else None
        out = {}
        for c in columns:
            if c.name in wanted:
                j = first_block[c.name]
                if c.kind == "sparse":
                    out[c.name] = _permuted(_sparse(chunk, j, c), order)
                elif c.kind in LISTS:
                    out[c.name] = _permuted(_list(chunk, j, c, fixed.get(c.name), pad.get(c.name),
                                                  ragged, fill.get(c.name)), order)
                else:
                    out[c.name] = _scalar(chunk, j, c, fill.get(c.name), order)
        return out

    return parse


def _scalar(chunk: _Chunk, j: int, c: FeedColumn, filler, order):
    """A scalar or string column in row order ``order``, with the user's fill value in its null
    rows."""
    dtype = _TF_DTYPES[c.dtype]
    if c.kind == "string":
        values = chunk.strings(j, order)
    else:
        values = _permuted(chunk.block(j, dtype), order)
    if filler is None:
        return values
    valid = _permuted(chunk.valid(j + BLOCKS[c.kind] - 1), order)
    return tf.where(valid, values, tf.constant(filler, dtype))


def _sparse(chunk: _Chunk, j: int, c: FeedColumn):
    """A sparse vector column as two ragged tensors (column ids, values): they shuffle and
    rebatch like any list column, and become a SparseTensor once batched (see spool_dataset)."""
    ids = chunk.block(j, tf.int64)
    values = chunk.block(j + 1, _TF_DTYPES[c.dtype])
    splits = chunk.block(j + 2, tf.int64)
    return (tf.RaggedTensor.from_row_splits(ids, splits, validate=False),
            tf.RaggedTensor.from_row_splits(values, splits, validate=False))


def _list(chunk: _Chunk, j: int, c: FeedColumn, width, longest, ragged: bool, filler):
    """A list column (of numbers, or of strings): dense ``[n, width]`` when the whole dataset is
    fixed-width, else padded to ``longest`` (with zeros, or empty strings) or ragged."""
    dtype = _TF_DTYPES[c.dtype]
    # Strings take two blocks (offsets, bytes) where numbers take one; shape and validity follow.
    if c.kind == "strings":
        values, j = chunk.strings(j), j + 1
    else:
        values = chunk.block(j, dtype)
    if filler is not None:
        filler = tf.constant(filler, dtype)
        element_valid = chunk.block(j + 2, tf.bool)
        values = tf.cond(tf.size(element_valid) > 0,
                         lambda: tf.where(element_valid, values, filler), lambda: values)
    if width is not None and filler is None:
        # No null rows: the splits are not needed. The row count is given, not inferred: with a
        # width of 0 it could not be.
        return tf.reshape(values, tf.stack([chunk.rows, width]))
    r = tf.RaggedTensor.from_row_splits(values, chunk.row_splits(j + 1), validate=False)
    if width is not None:
        # A null row holds no values: it becomes a full row of the fill value.
        return r.to_tensor(default_value=filler, shape=[None, width])
    return r if ragged else r.to_tensor(shape=[None, longest])


def spool_dataset(directory, chunks, columns: Sequence[FeedColumn], *, features=None, label=None,
                  batch_size: int = 32, shuffle: bool = True, seed: int | None = None,
                  repeat: bool = False, fill: Mapping[str, object] | None = None,
                  ragged: bool = False, list_lengths: Mapping[str, Sequence[int]] | None = None,
                  sizes: Mapping[str, int] | None = None, dense: Sequence[str] = (),
                  drop_remainder: bool = False, shuffle_window: int = 1) -> tf.data.Dataset:
    """A batched dataset of ``(features_dict, label)`` (or ``features_dict`` without a label).

    Shuffling permutes the order of the chunks and the rows of each chunk; ``shuffle_window`` > 1
    permutes the rows of that many consecutive chunks together instead (a larger shuffle buffer,
    at the memory of that many chunks).

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
        if c.kind in LISTS and c.name in wanted:
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
    window = max(1, int(shuffle_window)) if shuffle else 1
    parse = _parse_chunk(columns, wanted, fixed, pad, ragged, fill, shuffle and window == 1)

    def chunk(path, key=None):
        # One map per chunk does everything per-row work needs (parse, permute, pick the
        # columns): per-batch stages cost a fixed overhead per batch, which dominates at small
        # batch sizes.
        cols = parse(path, key)
        picked = {k: cols[k] for k in features}
        return (picked, cols[label]) if label else picked

    # Maps run in order even when shuffling (the order is already random): out of order, a chunk
    # of the next pass over the spool could overtake one of this pass and break exactly-once.
    if window == 1:
        if repeat:
            paths = paths.repeat()
        ds = _keyed(paths, shuffle, seed).map(chunk, num_parallel_calls=tf.data.AUTOTUNE,
                                               deterministic=True)
    else:
        # Windows are cut within one pass over the spool and the pass repeated after, so that a
        # window never mixes rows of two epochs.
        ds = paths.map(chunk, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.ragged_batch(window)
        if repeat:
            ds = ds.repeat()
        ds = _keyed(ds, True, seed).map(_mix_window, num_parallel_calls=tf.data.AUTOTUNE,
                                        deterministic=True)
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
