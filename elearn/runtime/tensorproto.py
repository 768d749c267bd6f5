"""Serialized ``tensorflow.TensorProto`` built with numpy, so executors never import TensorFlow.

``tf.io.parse_tensor`` turns these bytes back into a tensor natively. Only the fields needed are
written: dtype (1), tensor_shape (2), tensor_content (4) for numbers, string_val (8) for strings.
"""
from __future__ import annotations

import numpy as np

# tensorflow/core/framework/types.proto
DTYPE_ENUM = {
    "float32": 1, "float64": 2, "int32": 3, "uint8": 4, "int16": 5, "int8": 6, "string": 7,
    "int64": 9, "bool": 10, "uint16": 17, "float16": 19, "uint32": 22, "uint64": 23,
}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    return _varint(tag) + _varint(len(payload)) + payload


def _header(dtype: str, shape) -> bytes:
    dims = b"".join(_field(0x12, b"\x08" + _varint(int(d))) for d in shape)
    return b"\x08" + _varint(DTYPE_ENUM[dtype]) + _field(0x12, dims)


def numeric_parts(arr: np.ndarray) -> list:
    """A numeric TensorProto as ``[prefix bytes, buffer of the values]``: the values are not copied.

    Writing the parts one after the other (``file.writelines``) gives the same bytes as
    :func:`numeric` without building the message in memory.
    """
    arr = np.ascontiguousarray(arr)
    name = "bool" if arr.dtype == np.bool_ else arr.dtype.name
    content = memoryview(arr.astype(arr.dtype.newbyteorder("<"), copy=False).reshape(-1)).cast("B")
    return [_header(name, arr.shape) + _varint(0x22) + _varint(content.nbytes), content]


def numeric(arr: np.ndarray) -> bytes:
    return b"".join(numeric_parts(arr))


def strings(offsets: np.ndarray, data: np.ndarray) -> bytes:
    """A 1-D string tensor from Arrow-style ``offsets`` (n+1) into the byte buffer ``data``.

    Vectorised: each element is ``0x42 varint(len) bytes``; the varints and the byte copy are
    numpy operations, so a million strings cost milliseconds, not a Python loop.
    """
    offsets = offsets.astype(np.int64, copy=False)
    n = len(offsets) - 1
    lens = np.diff(offsets)
    nvar = 1 + sum((lens >= (1 << (7 * k))).astype(np.int64) for k in range(1, 5))
    size = 1 + nvar + lens
    starts = np.zeros(n + 1, np.int64)
    np.cumsum(size, out=starts[1:])
    out = np.empty(int(starts[-1]), np.uint8)
    out[starts[:-1]] = 0x42
    for k in range(5):
        sel = nvar > k
        if not sel.any():
            break
        byte = (lens[sel] >> (7 * k)) & 0x7F
        byte |= np.where(nvar[sel] > k + 1, 0x80, 0)
        out[starts[:-1][sel] + 1 + k] = byte
    if len(data):
        shift = (starts[:-1] + 1 + nvar) - offsets[:-1]
        dest = np.repeat(shift, lens) + np.arange(offsets[0], offsets[-1], dtype=np.int64)
        out[dest] = data[offsets[0]:offsets[-1]]
    return _header("string", (n,)) + out.tobytes()
