"""Files on a disk this process sees, written so that a reader never finds half of one: the local
side of :mod:`elearn.storage.stores` and of the driver's file service (:mod:`elearn.storage.driverfs`)."""
from __future__ import annotations

import io
import os
import secrets
import shutil
from typing import BinaryIO

from elearn.errors import StorageError

__all__ = ["TMP_PREFIX", "write_atomic", "append_local", "list_local", "delete_tree_local", "local_files",
           "join_rel", "LimitedReader"]

TMP_PREFIX = ".elearn-tmp-"       # temporary names of atomic writes; never listed


def join_rel(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix and rel else prefix or rel


def local_files(root: str) -> dict[str, int]:
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            if name.startswith(TMP_PREFIX):
                continue
            full = os.path.join(dirpath, name)
            try:
                size = os.stat(full).st_size
            except FileNotFoundError:       # removed while we walked
                continue
            out[os.path.relpath(full, root).replace(os.sep, "/")] = size
    return out


class LimitedReader(io.RawIOBase):
    """At most ``n`` bytes of ``f``: a file still growing (a log) is sent as it was when measured."""

    def __init__(self, f: BinaryIO, n: int):
        self._f, self._left = f, n

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        data = self._f.read(self._left if size is None or size < 0 else min(size, self._left))
        self._left -= len(data)
        return data



def write_atomic(dest: str, src: BinaryIO, length: int | None = None, chunk: int = 1 << 20) -> int:
    """Stream ``src`` (``length`` bytes, or to its end) into ``dest`` through a temporary file in
    the same directory and ``os.replace``. Parents are created. Returns the bytes written; a short
    ``src`` raises StorageError and leaves ``dest`` as it was. Shared with the driver's file service.
    """
    parent = os.path.dirname(dest) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f"{TMP_PREFIX}{secrets.token_hex(6)}-{os.path.basename(dest)}")
    written = 0
    try:
        with open(tmp, "wb") as out:
            while length is None or written < length:
                data = src.read(chunk if length is None else min(chunk, length - written))
                if not data:
                    break
                out.write(data)
                written += len(data)
        if length is not None and written != length:
            raise StorageError(f"writing {dest}: the data ended after {written} of {length} bytes")
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return written


def append_local(dest: str, src: BinaryIO, length: int, offset: int | None) -> tuple[bool, int]:
    """Append ``length`` bytes of ``src`` to ``dest`` if it holds exactly ``offset`` bytes (any size
    when ``offset`` is None). Returns ``(appended, size after)``. Shared with the driver's service."""
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    with open(dest, "ab") as out:
        size = out.seek(0, os.SEEK_END)
        if offset is not None and size != offset:
            return False, size
        left = length
        while left > 0:
            data = src.read(min(1 << 20, left))
            if not data:
                # Keep the file as it was: a half-appended record would duplicate on the retry.
                out.truncate(size)
                raise StorageError(f"appending to {dest}: the data ended after {length - left} of "
                                   f"{length} bytes")
            out.write(data)
            left -= len(data)
        return True, size + length


def list_local(root: str, prefix: str = "") -> dict[str, int]:
    """Files below ``root/prefix``: path relative to ``root`` -> size. Shared with the service."""
    base = os.path.join(root, *prefix.split("/")) if prefix else root
    if os.path.isfile(base):
        return {prefix: os.stat(base).st_size}
    return {join_rel(prefix, rel): size for rel, size in local_files(base).items()} if os.path.isdir(base) else {}


def delete_tree_local(path: str, keep_root: bool) -> None:
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
    elif keep_root:
        for name in os.listdir(path):
            delete_tree_local(os.path.join(path, name), keep_root=False)
    else:
        shutil.rmtree(path)
