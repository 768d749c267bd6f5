"""Small files the processes of an application hand each other: JSON lines and atomic writes.

``events.jsonl`` and ``metrics.jsonl`` are appended to by several processes (the driver, the
coordinator, an allreduce chief); one ``write`` of one line per record keeps records whole. Result
and configuration files are written to a temporary name and renamed, so a reader never sees half.
"""
from __future__ import annotations

import io
import json
import os
import time
from typing import Iterator

from elearn.storage.localfiles import write_atomic


def append_record(path: str, kind: str | None = None, /, **fields) -> None:
    """Append one JSON record (with ``time``, and ``event`` = ``kind`` when given) to ``path``."""
    record = {"time": time.time(), **({"event": kind} if kind else {}), **fields}
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def records(path: str) -> Iterator[dict]:
    """The JSON records of a JSON-lines file, skipping a line cut short by a crash."""
    if not path or not os.path.exists(path):
        return
    with open(path) as f:
        for line in f:
            try:
                yield json.loads(line)
            except ValueError:
                continue


def write_json(path: str, payload) -> None:
    """``payload`` as JSON in ``path``, written whole or not at all (``localfiles.write_atomic``)."""
    data = json.dumps(payload).encode()
    write_atomic(path, io.BytesIO(data), len(data))


def read_json(path: str):
    with open(path) as f:
        return json.load(f)
