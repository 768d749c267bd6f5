"""The Arrow spool: a worker's partition on local disk, in chunks TensorFlow reads natively.

A Spark task receives its partition as Arrow record batches (``mapInArrow``) and streams them here;
memory stays bounded by one chunk whatever the partition size. Each chunk is one file::

    int64 header[1 + B]       rows in the chunk, then the byte length of each of the B blocks
    B blocks                  serialized TensorProtos, the blocks of each column in schema order

(see ``feedspec`` for the blocks of each column kind). ``reader.py`` opens it with
``tf.io.read_file`` + ``tf.io.parse_tensor``: no Python runs per row on either side.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from elearn.runtime import tensorproto
from elearn.runtime.feedspec import BLOCKS, FeedColumn

CHUNK_ROWS = 65536
META = "spool.json"
_EMPTY_VALID = tensorproto.numeric(np.zeros(0, np.bool_))


def chunk_name(index: int) -> str:
    return f"chunk-{index:06d}.spool"


def _validity(arr: pa.Array) -> tuple[bytes, int]:
    nulls = arr.null_count
    if not nulls:
        return _EMPTY_VALID, 0
    return tensorproto.numeric(arr.is_valid().to_numpy(zero_copy_only=False)), nulls


def _scalar(arr: pa.Array, col: FeedColumn) -> np.ndarray:
    if arr.null_count:
        arr = arr.fill_null(False if col.dtype == "bool" else 0)
    return arr.to_numpy(zero_copy_only=False).astype(col.dtype, copy=False)


def _string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type):
        odt = np.int64
    else:
        odt = np.int32
    arr = arr.fill_null("" if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) else b"")
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], odt)[arr.offset:arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offsets, data


def encode_column(arr: pa.Array, col: FeedColumn) -> tuple[list, int]:
    """The blocks of one column of one chunk, and its null count (row-level and element-level).

    A block is bytes or a list of buffers written back to back (large values are not copied).
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    valid, nulls = _validity(arr)
    if col.kind == "scalar":
        return [tensorproto.numeric_parts(_scalar(arr, col)), valid], nulls
    if col.kind == "string":
        return [tensorproto.strings(*_string_buffers(arr)), valid], nulls
    if col.kind == "sparse":
        # flatten() applies the struct's own nulls to its children: a null vector is empty.
        fields = dict(zip([f.name for f in arr.type], arr.flatten()))
        idx, vals = fields["indices"], fields["values"]
        splits = _splits(idx)
        flat = pc.list_flatten(vals)
        nulls += flat.null_count
        indices = pc.list_flatten(idx).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        return [tensorproto.numeric_parts(indices), tensorproto.numeric_parts(_scalar(flat, col)),
                tensorproto.numeric_parts(splits), valid], nulls
    # list: null rows become empty lists; null elements are zeroed, with their own validity so that
    # the reader can put the user's fill value there instead.
    splits = _splits(arr)
    values = pc.list_flatten(arr)
    element_valid, element_nulls = _validity(values)
    nulls += element_nulls
    return [tensorproto.numeric_parts(_scalar(values, col)), tensorproto.numeric_parts(splits),
            element_valid, valid], nulls


def _splits(arr: pa.Array) -> np.ndarray:
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    splits = np.zeros(len(arr) + 1, np.int64)
    np.cumsum(lengths, out=splits[1:])
    return splits


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
        self.list_lengths = {c.name: [None, None] for c in columns if c.kind == "list"}
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
            arr = table.column(col.name)
            encoded, nulls = encode_column(arr, col)
            self.nulls[col.name] += nulls
            if col.kind == "list" and table.num_rows:
                lengths = pc.list_value_length(arr)
                lo, hi = pc.min(lengths).as_py(), pc.max(lengths).as_py()
                seen = self.list_lengths[col.name]
                if lo is not None:
                    seen[0] = lo if seen[0] is None else min(seen[0], lo)
                    seen[1] = hi if seen[1] is None else max(seen[1], hi)
            elif col.kind == "sparse" and table.num_rows:
                widest = pc.max(pc.struct_field(arr, "size")).as_py()
                self.sizes[col.name] = max(self.sizes[col.name], widest or 0)
            blocks.extend(encoded)
        assert len(blocks) == sum(BLOCKS[c.kind] for c in self.columns)
        parts = [b if isinstance(b, list) else [b] for b in blocks]
        sizes = [sum(memoryview(x).nbytes for x in block) for block in parts]
        header = np.array([table.num_rows] + sizes, "<i8").tobytes()
        path = os.path.join(self.directory, chunk_name(self.chunks))
        with open(path, "wb") as f:
            f.write(header)
            for block in parts:
                f.writelines(block)
        self.chunks += 1
        self.rows += table.num_rows
        self.bytes += len(header) + sum(sizes)

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
            elif col.kind == "sparse":
                arrays.append(pa.array([], type=pa.struct([
                    ("size", pa.int32()), ("indices", pa.list_(pa.int64())),
                    ("values", pa.list_(pa.float64()))])))
            else:
                arrays.append(pa.array([], type=pa.list_(pa.from_numpy_dtype(np.dtype(col.dtype)))))
        self._write_chunk(pa.table(arrays, names=[c.name for c in self.columns]))


def read_meta(directory: str) -> dict:
    with open(os.path.join(directory, META)) as f:
        return json.load(f)
