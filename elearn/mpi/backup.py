"""Resuming ``Model.fit`` after the group restarts: Keras's ``BackupAndRestore`` for allreduce mode.

Every worker must restore the same state (MultiWorkerMirroredStrategy only broadcasts initial
values, not later restores), but only the chief may write to the shared checkpoint directory.
tf_keras's callback already works that way under a multi-worker strategy; Keras 3's knows nothing
of workers, so each non-chief worker gets a private copy of the chief's backup to restore from and
to write into, deleted with the worker's scratch directory.
"""
from __future__ import annotations

import os
import shutil

BACKUP = "backup"


def _is_tf_keras(keras) -> bool:
    return getattr(keras, "__name__", "").split(".")[0] == "tf_keras"


def mirror_chief(chief_dir: str, mine: str) -> None:
    """Make this worker's private checkpoint directory a copy of the chief's, to restore from."""
    shutil.rmtree(mine, ignore_errors=True)
    if os.path.isdir(chief_dir):
        # The chief cannot save again before this worker has joined the first collective step.
        shutil.copytree(chief_dir, mine)
    else:
        os.makedirs(mine, exist_ok=True)


def backup_callback(ctx, keras, save_freq="epoch"):
    chief_dir = os.path.join(ctx.chief_checkpoint_dir or ctx.checkpoint_dir, BACKUP)
    if _is_tf_keras(keras) or ctx.is_chief:
        return _reporting(keras, ctx, chief_dir, save_freq)
    mine = os.path.join(ctx.checkpoint_dir, BACKUP)
    mirror_chief(chief_dir, mine)
    return _reporting(keras, ctx, mine, save_freq)


def _reporting(keras, ctx, backup_dir: str, save_freq):
    """``BackupAndRestore`` that records where a resumed ``fit`` starts (a ``restore`` event, for
    the summary's steps lost): the first epoch it begins, when that is not the first."""

    class Backup(keras.callbacks.BackupAndRestore):
        def on_epoch_begin(self, epoch, logs=None):
            super().on_epoch_begin(epoch, logs)
            if not getattr(self, "_elearn_started", False):
                self._elearn_started = True
                if epoch > 0 and ctx.events is not None:
                    steps = (self.params or {}).get("steps") or 0
                    ctx.events("restore", step=epoch * steps, epoch=epoch, path=backup_dir)

    return Backup(backup_dir=backup_dir, save_freq=save_freq)
