"""NumPy to Arrow without pandas, for the code Spark's Python workers run at the start of a job.

``pa.array`` imports pandas the first time a process calls it (pyarrow checks whether its argument
is a pandas object), whatever the argument: 0.3 CPU-s on an idle machine, 0.6-0.8 s at the start of
a run, when every Python worker does it at once on the same cores. The feed's dealing and routing
run in every worker of the first stage, on the way to the first step; they build their arrays from
NumPy buffers instead (zero-copy for numbers), which never touches pandas.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def from_numpy(values: np.ndarray) -> pa.Array:
    """A 1-d NumPy array of numbers or booleans as an Arrow array without nulls."""
    values = np.ascontiguousarray(values)
    if values.ndim != 1:
        raise ValueError(f"from_numpy takes a 1-d array, got shape {values.shape}")
    if values.dtype == np.bool_:
        # Arrow packs booleans one bit each, least significant bit first.
        data = np.packbits(values, bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(data)])
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values),
                                 [None, pa.py_buffer(values)])


def _bits(buffer: pa.Buffer, offset: int, length: int) -> np.ndarray:
    """``length`` bits of an Arrow bitmap from bit ``offset``, as booleans."""
    return np.unpackbits(np.frombuffer(buffer, np.uint8), bitorder="little",
                         count=offset + length)[offset:].astype(bool)


def valid_mask(arr: pa.Array) -> np.ndarray:
    """True where ``arr`` holds a value (``arr.is_valid()`` as NumPy)."""
    validity = arr.buffers()[0]
    if validity is None or not arr.null_count:
        return np.ones(len(arr), bool)
    return _bits(validity, arr.offset, len(arr))


def to_numpy(arr: pa.Array) -> np.ndarray:
    """A numeric or boolean Arrow array as NumPy, nulls as 0 / False (``fill_null`` then
    ``to_numpy``, both of which import pandas). Zero-copy when there are no nulls; other types
    take pyarrow's own conversion."""
    kind = arr.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
        return arr.fill_null(0).to_numpy(zero_copy_only=False) if arr.null_count else \
            arr.to_numpy(zero_copy_only=False)
    n, data = len(arr), arr.buffers()[1]
    if pa.types.is_boolean(kind):
        values = _bits(data, arr.offset, n) if n else np.zeros(0, bool)
    else:
        dtype = np.dtype(kind.to_pandas_dtype())
        values = (np.frombuffer(data, dtype, count=n, offset=arr.offset * dtype.itemsize) if n
                  else np.zeros(0, dtype))
    if arr.null_count:
        values = values.copy()
        values[~valid_mask(arr)] = 0
    return values


def from_strings(texts: list) -> pa.Array:
    """Python strings as an Arrow string array (``pa.array(texts)`` without pandas)."""
    data = [text.encode() for text in texts]
    offsets = np.zeros(len(data) + 1, np.int32)
    np.cumsum([len(d) for d in data], out=offsets[1:])
    return pa.Array.from_buffers(pa.string(), len(data),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))])
