"""Files that grow on this host, kept up to date at another location while they grow.

A node's log and an allreduce chief's TensorBoard event files are written on the executor's host,
which the driver cannot see. A :class:`Mirror` thread brings their copies at the destination (the
driver's application directory, through its file service) up to date every ``every`` seconds,
sending only the new bytes (``Storage.append_file``), and once more when stopped, so the driver has
a node's last lines also when it fails. A copy that cannot be sent now is retried on the next turn:
a slow or unreachable driver never stops the node.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import threading

log = logging.getLogger(__name__)


class Mirror:
    def __init__(self, storage, every: float = 1.0):
        self.storage, self.every = storage, every
        self._sources: list[tuple[str, str, tuple]] = []   # (local, destination, names skipped)
        self._offsets: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, local: str, destination: str, skip=()) -> "Mirror":
        """Mirror the file ``local`` to ``destination`` (or, for a directory, every file in it
        below ``destination``, except those whose path in it matches a pattern of ``skip``)."""
        with self._lock:
            self._sources.append((local, destination, tuple(skip)))
        return self

    def start(self) -> "Mirror":
        self._thread = threading.Thread(target=self._run, name="elearn-mirror", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sync()

    def sync(self) -> None:
        with self._lock:
            for local, destination, skip in self._sources:
                for path, dest in _files(local, destination, skip):
                    try:
                        self._offsets[path] = self.storage.append_file(path, dest, self._offsets.get(path, 0))
                    except Exception as exc:  # the next turn tries again
                        log.info("could not mirror %s: %s", path, exc)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and bring every copy up to date one last time."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.sync()


def _files(local: str, destination: str, skip=()):
    if os.path.isfile(local):
        yield local, destination
        return
    for root, _dirs, names in os.walk(local):
        for name in sorted(names):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, local).replace(os.sep, "/")
            if any(fnmatch.fnmatchcase(rel, pattern) for pattern in skip):
                continue
            yield path, f"{destination}/{rel}" if destination else rel
