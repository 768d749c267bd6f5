"""The Arrow spool: a worker's partition on local disk, in chunks TensorFlow reads natively.

A Spark task receives its partition as Arrow record batches (``mapInArrow``) and streams them here;
memory stays bounded by one chunk whatever the partition size. Each chunk is one file::

    int64 header[1 + B]       rows in the chunk, then the byte length of each of the B blocks
    B blocks                  the blocks of each column in schema order, back to back

A block is one flat little-endian array with no framing of its own: its dtype follows from the
column (``feedspec`` lists the blocks of each column kind), its length from the header; booleans
take one byte each. Most blocks are Arrow's own buffers, written without a copy. ``reader.py``
reads a chunk with ``tf.io.read_file`` and turns each block into a tensor with
``tf.io.decode_raw``; the strings of a string column are cut out of the file's contents with one
``tf.strings.substr``. No Python runs per row on either side.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from elearn.feed.arrays import to_numpy, valid_mask
from elearn.feed.columns import BLOCKS, LISTS, FeedColumn

CHUNK_ROWS = 65536
META = "spool.json"
# Blocks go to the file in pieces of at most this size (memoryview slices: nothing is copied). A
# single write of 2 MiB or more lets the page cache take huge (2 MiB) folios, and on a VM that hands
# free memory back to its host (balloon free page reporting) those are faulted in afresh: on ext4
# on the project's machines, 2.5-3 ms per MB, against 0.3 ms per MB in 1 MiB pieces. A chunk's
# few dozen extra system calls cost nothing measurable anywhere.
WRITE_PIECE = 1 << 20
# The validity block of a column without nulls in the chunk: the reader takes every row as valid.
_NO_NULLS = b""


def chunk_name(index: int) -> str:
    return f"chunk-{index:06d}.spool"


def _pieces(blocks: list):
    """The blocks' bytes, back to back, in slices of at most ``WRITE_PIECE`` bytes."""
    for block in blocks:
        view = memoryview(block).cast("B")
        for start in range(0, view.nbytes, WRITE_PIECE):
            yield view[start:start + WRITE_PIECE]


@dataclass
class EncodedColumn:
    """The blocks of one column of one chunk, and what the spool's metadata needs from it."""

    blocks: list             # buffers (bytes-like), written to the file one after the other
    nulls: int               # row-level and element-level nulls
    lengths: tuple | None = None  # list columns: (shortest, longest) non-null row; None if none
    size: int = 0            # sparse columns: the widest vector


def _raw(values: np.ndarray) -> memoryview:
    """The bytes of ``values`` as a block: little-endian, not copied on a little-endian machine."""
    values = np.ascontiguousarray(values).astype(values.dtype.newbyteorder("<"), copy=False)
    return memoryview(values.reshape(-1)).cast("B")


def _validity(arr: pa.Array) -> tuple:
    nulls = arr.null_count
    if not nulls:
        return _NO_NULLS, 0
    return _raw(valid_mask(arr)), nulls


def _scalar(arr: pa.Array, col: FeedColumn) -> np.ndarray:
    return to_numpy(arr).astype(col.dtype, copy=False)


def _is_large(arr: pa.Array) -> bool:
    return pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)


def _offsets(arr: pa.Array) -> np.ndarray:
    """A string array's ``len(arr) + 1`` offsets into its data buffer."""
    offsets = np.frombuffer(arr.buffers()[1], np.int64 if _is_large(arr) else np.int32)
    return offsets[arr.offset:arr.offset + len(arr) + 1]


def _strings(arr: pa.Array) -> list:
    """``[offsets, bytes]``: int64 offsets[n + 1] from 0 into the column's bytes, which are Arrow's
    data buffer as is. The reader cuts every string out of the chunk file by position, so no
    per-string framing is built here."""
    if len(arr) == 0:
        return [_raw(np.zeros(1, np.int64)), b""]
    offsets = _offsets(arr)
    if arr.null_count and np.diff(offsets)[~valid_mask(arr)].any():
        # A null's slot spans bytes (Spark's never do): make it an empty string.
        text = pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)
        arr = arr.fill_null("" if text else b"")
        offsets = _offsets(arr)
    data_buffer = arr.buffers()[2]
    first, last = int(offsets[0]), int(offsets[-1])
    data = memoryview(data_buffer)[first:last] if data_buffer is not None else b""
    return [_raw(offsets.astype(np.int64) - first), data]


def _row_splits(lengths: pa.Array) -> np.ndarray:
    """int64 row splits[n + 1] from per-row list lengths (a null row counts as empty)."""
    lengths = to_numpy(lengths)
    splits = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=splits[1:])
    return splits


def _list_shape(arr: pa.Array) -> tuple:
    """The shape block of a list column and its (shortest, longest) non-null row.

    A chunk whose rows all have the same length ``k`` (and none is null) stores ``[k]`` instead
    of n + 1 row splits: 8 bytes per row less to write and read, for the common fixed-width
    arrays and dense vectors.
    """
    lengths = pc.list_value_length(arr)
    extremes = pc.min_max(lengths)
    lo, hi = extremes["min"].as_py(), extremes["max"].as_py()
    if lo is not None and lo == hi and not arr.null_count:
        return _raw(np.array([hi], np.int64)), (lo, hi)
    return _raw(_row_splits(lengths)), (None if lo is None else (lo, hi))


def _one_array(arr) -> pa.Array:
    """A chunk's column as one Array. A column that is one Arrow chunk (a record batch, or a
    slice of one) is taken as is: ``combine_chunks`` would copy it."""
    if isinstance(arr, pa.ChunkedArray):
        return arr.chunk(0) if arr.num_chunks == 1 else arr.combine_chunks()
    return arr


def encode_column(arr: pa.Array, col: FeedColumn) -> EncodedColumn:
    """The blocks of one column of one chunk (see ``feedspec.BLOCKS`` for their order)."""
    arr = _one_array(arr)
    valid, nulls = _validity(arr)
    if col.kind == "scalar":
        return EncodedColumn([_raw(_scalar(arr, col)), valid], nulls)
    if col.kind == "string":
        return EncodedColumn(_strings(arr) + [valid], nulls)
    if col.kind == "sparse":
        # flatten() applies the struct's own nulls to its children: a null vector is empty.
        fields = dict(zip([f.name for f in arr.type], arr.flatten()))
        idx, vals = fields["indices"], fields["values"]
        splits = _row_splits(pc.list_value_length(idx))
        flat = pc.list_flatten(vals)
        nulls += flat.null_count
        indices = to_numpy(pc.list_flatten(idx)).astype(np.int64, copy=False)
        widest = pc.max(fields["size"]).as_py() or 0
        return EncodedColumn([_raw(indices), _raw(_scalar(flat, col)), _raw(splits), valid], nulls,
                             size=widest)
    # list and strings: null rows become empty lists; null elements are zeroed (or empty strings),
    # with their own validity so that the reader can put the user's fill value there instead.
    shape, lengths = _list_shape(arr)
    values = pc.list_flatten(arr)
    element_valid, element_nulls = _validity(values)
    flat = _strings(values) if col.kind == "strings" else [_raw(_scalar(values, col))]
    return EncodedColumn(flat + [shape, element_valid, valid], nulls + element_nulls, lengths=lengths)


class SpoolWriter:
    """Streams record batches of one dataset of one worker into ``directory``."""

    def __init__(self, directory: str, columns: list[FeedColumn], chunk_rows: int = CHUNK_ROWS):
        self.directory = directory
        self.columns = columns
        self.chunk_rows = chunk_rows
        self.rows = 0
        self.bytes = 0
        self.chunks = 0
        self.nulls = {c.name: 0 for c in columns}
        self.list_lengths = {c.name: [None, None] for c in columns if c.kind in LISTS}
        self.sizes = {c.name: 0 for c in columns if c.kind == "sparse"}  # widest sparse vector
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory)

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= self.chunk_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending)
        self._pending, self._pending_rows = [], 0
        for start in range(0, table.num_rows, self.chunk_rows):
            self._write_chunk(table.slice(start, self.chunk_rows))

    def _write_chunk(self, table: pa.Table) -> None:
        blocks = []
        for col in self.columns:
            encoded = encode_column(table.column(col.name), col)
            self._account(col, encoded)
            blocks.extend(encoded.blocks)
        assert len(blocks) == sum(BLOCKS[c.kind] for c in self.columns)
        sizes = [memoryview(b).nbytes for b in blocks]
        header = np.array([table.num_rows] + sizes, "<i8").tobytes()
        path = os.path.join(self.directory, chunk_name(self.chunks))
        with open(path, "wb") as f:
            f.writelines(_pieces([header] + blocks))
        self.chunks += 1
        self.rows += table.num_rows
        self.bytes += len(header) + sum(sizes)

    def _account(self, col: FeedColumn, encoded: EncodedColumn) -> None:
        """Fold one chunk's null count, list lengths and sparse sizes into the spool's totals."""
        self.nulls[col.name] += encoded.nulls
        if col.kind in LISTS and encoded.lengths is not None:
            lo, hi = encoded.lengths
            seen = self.list_lengths[col.name]
            seen[0] = lo if seen[0] is None else min(seen[0], lo)
            seen[1] = hi if seen[1] is None else max(seen[1], hi)
        elif col.kind == "sparse":
            self.sizes[col.name] = max(self.sizes[col.name], encoded.size)

    def close(self) -> dict:
        """Flush, write the metadata file and return what was spooled."""
        self._flush()
        if self.chunks == 0:  # an empty partition still gets one (empty) chunk: readers stay uniform
            self._write_empty()
        meta = {"rows": self.rows, "chunks": self.chunks, "bytes": self.bytes, "nulls": self.nulls,
                "list_lengths": self.list_lengths, "sizes": self.sizes, "columns": [c.to_dict() for c in self.columns]}
        with open(os.path.join(self.directory, META), "w") as f:
            json.dump(meta, f)
        return meta

    def _write_empty(self) -> None:
        arrays = []
        for col in self.columns:
            if col.kind == "scalar":
                arrays.append(pa.array([], type=pa.from_numpy_dtype(np.dtype(col.dtype))))
            elif col.kind == "string":
                arrays.append(pa.array([], type=pa.string()))
            elif col.kind == "strings":
                arrays.append(pa.array([], type=pa.list_(pa.string())))
            elif col.kind == "sparse":
                arrays.append(pa.array([], type=pa.struct([
                    ("size", pa.int32()), ("indices", pa.list_(pa.int64())),
                    ("values", pa.list_(pa.float64()))])))
            else:
                arrays.append(pa.array([], type=pa.list_(pa.from_numpy_dtype(np.dtype(col.dtype)))))
        self._write_chunk(pa.table(arrays, names=[c.name for c in self.columns]))
