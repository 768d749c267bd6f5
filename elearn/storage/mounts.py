"""Whether a ``file://`` location is the same directory on every host: a mark the driver leaves and
the nodes read.

A ``file://`` location promises one directory mounted at the same path on every host (NFS, dbfs).
The driver can only check its own host. A host where the mount is missing still has the path, or
lets a training process create it: a plain local directory, where an allreduce chief would write
the model and the checkpoints of hours of training, on a disk nobody reads. So when the driver
checks a shared location it leaves a mark there (a small file named for the application, holding a
random token), and every node whose training process writes the location directly reads the mark
before it starts. No mark, or another application's token, means another directory: the node fails
at once, naming its host, the path and the fix.

PS mode needs no mark: its checkpoints and exports are written through the chief, on the driver's
host (``elearn.ps``), so only the driver's own check counts there.
"""
from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass

from elearn.errors import StorageError
from elearn.storage.locations import Location

PREFIX = ".elearn-mount-"


@dataclass(frozen=True)
class MountMark:
    """The mark left in one shared location: ``flag`` names the option that chose it."""

    flag: str
    uri: str
    path: str      # the mark file
    token: str

    def check(self) -> None:
        """Raise StorageError unless this host sees the driver's mark (same directory, same run)."""
        try:
            with open(self.path) as f:
                if f.read().strip() == self.token:
                    return
            found = "holds another run's token"
        except OSError as exc:
            found = f"is missing ({exc.__class__.__name__})"
        host = socket.gethostname()
        raise StorageError(
            f"{self.flag} {self.uri} is not the driver's directory on host {host}: the mark the "
            f"driver left there ({os.path.basename(self.path)}) {found}. A file:// location must "
            "be the same directory, mounted at the same path, on every host of the cluster. Mount "
            f"it on {host} too, or use object storage or HDFS (s3://, gs://, hdfs://), or a plain "
            "path (on the driver's disk; nodes on other hosts reach it through the driver).")

    def remove(self) -> None:
        try:
            os.remove(self.path)
        except OSError:
            pass


def leave_mark(flag: str, location: Location, app_id: str) -> MountMark:
    """Write the mark of ``app_id`` for ``flag`` into the shared ``location``."""
    token = secrets.token_hex(16)
    # A name of its own per option (--checkpoint-dir and --model-dir may name one directory) and
    # per run: a name never looked up before is never answered from an NFS client's stale cache.
    path = os.path.join(location.path, f"{PREFIX}{app_id}-{flag.lstrip('-')}-{token[:8]}")
    tmp = path + ".tmp"
    os.makedirs(location.path, exist_ok=True)
    with open(tmp, "w") as f:
        f.write(token)
    os.replace(tmp, path)  # a node never reads half a token
    return MountMark(flag, location.uri, path, token)


def check_marks(marks) -> None:
    """Check every mark on this host; the first one missing raises StorageError."""
    for mark in marks:
        mark.check()
