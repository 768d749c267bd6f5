"""Checkpoints as the unit of progress: restore the latest on entry, save on a schedule.

A thin layer over ``tf.train.CheckpointManager``, which writes the checkpoint files first and the
``checkpoint`` index last, so a crash during a save leaves the previous checkpoint as "latest".
Both ``ctx.checkpoint`` (custom loops) and the checkpoints elearn adds to every Keras ``fit``
(``elearn.keras_fit``) are :class:`Checkpointer` objects, so they save and restore alike.

Where the bytes are written is decided by ``options`` (``tf.train.CheckpointOptions``): in PS mode
the variables live on the parameter servers, and without an I/O device TensorFlow's ``SaveV2`` would
run there and write to the PS host's disk; the PS backend names the chief's device instead, the host
where the checkpoint directory is.
"""
from __future__ import annotations

import time

from elearn.tfimport import quiet_tf_warnings


class Checkpointer:
    """Created by :meth:`elearn.TrainContext.checkpoint`; see there for an example.

    Attributes:
        step: the step of the restored checkpoint (0 when starting fresh).
        restored_from: the checkpoint path restored, or None.
    """

    def __init__(self, directory, objects: dict, *, every_steps: int | None = None,
                 every_seconds: float | None = None, max_to_keep: int = 3, coordinator=None,
                 on_save=None, source=None, options=None, announce: bool = True):
        """``directory``: a path, or an ``elearn.runtime.outputs.CheckpointStore`` that also keeps
        each save where the user asked. ``source``: the store the latest checkpoint is restored
        from when it is not ``directory``'s (an allreduce worker other than the chief restores the
        chief's and saves its own)."""
        import tensorflow as tf

        from elearn.runtime.outputs import CheckpointStore, Output

        self.store = directory if isinstance(directory, CheckpointStore) else \
            CheckpointStore(Output(str(directory), str(directory)))
        if every_steps is None and every_seconds is None:
            every_steps = 100
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self._coordinator = coordinator
        self._on_save = on_save
        self._options = options
        self._step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="elearn_step")
        self.checkpoint = tf.train.Checkpoint(elearn_step=self._step_var, **objects)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.store.local, max_to_keep=max_to_keep)
        self.restored_from = source.fetch_latest(into=self.store.local + "-restore") if source is not None \
            else self.store.fetch_latest()
        if self.restored_from:
            self.checkpoint.restore(self.restored_from, options=options)
        self.step = int(self._step_var.numpy())
        if self.restored_from and announce:
            print(f"[elearn] resuming from checkpoint {self.restored_from} (step {self.step})", flush=True)
            if on_save is not None:
                on_save(self.step, self.restored_from, restored=True)
        self._last_step, self._last_time = self.step, time.monotonic()

    def due(self, step: int) -> bool:
        if self.every_steps is not None and step - self._last_step >= self.every_steps:
            return True
        return self.every_seconds is not None and time.monotonic() - self._last_time >= self.every_seconds

    def save(self, step: int) -> str:
        """Save now, as of ``step`` (PS mode: after every scheduled step has finished)."""
        if self._coordinator is not None:
            self._coordinator.join()
        self._step_var.assign(step)
        with quiet_tf_warnings():  # retracing notes about TF's own saver, nothing to act on
            path = self.manager.save(checkpoint_number=step, options=self._options)
        self.store.saved(path)  # stored where the user asked, in the background
        self.step, self._last_step, self._last_time = step, step, time.monotonic()
        if self._on_save is not None:
            self._on_save(step, path)
        return path

    def maybe_save(self, step: int) -> str | None:
        """Save if ``every_steps`` / ``every_seconds`` says so; returns the path or None."""
        return self.save(step) if self.due(step) else None
