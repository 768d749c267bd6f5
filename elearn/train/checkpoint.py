"""Checkpoints as the unit of progress: restore the latest on entry, save on a schedule.

A thin layer over ``tf.train.CheckpointManager``, which writes the checkpoint files first and the
``checkpoint`` index last, so a crash during a save leaves the previous checkpoint as "latest".
Both ``ctx.checkpoint`` (custom loops) and the checkpoints elearn adds to every Keras ``fit``
(``elearn.train.keras_fit``) are :class:`Checkpointer` objects, so they save and restore alike.

Where the bytes are written is decided by ``options`` (``tf.train.CheckpointOptions``): in PS mode
the variables live on the parameter servers, and without an I/O device TensorFlow's ``SaveV2`` would
run there and write to the PS host's disk; the PS backend names the chief's device instead, the host
where the checkpoint directory is.
"""
from __future__ import annotations

import contextlib
import time

from elearn.train.outputs import CheckpointStore, Output
from elearn.train.tfimport import quiet_tf_warnings


def create_optimizer_slots(objects: dict) -> None:
    """Make the slots of every Keras optimizer in ``objects`` for the trainable variables of the
    models there, before a restore reads them.

    Keras optimizers make their slots (Adagrad's accumulators, Adam's moments) at the first step.
    A restore before that defers the slots' values, and with sharded variables they are then lost
    without an error: measured with ``bench/reshard_probe.py`` (tf_keras 2.21, a 2-PS checkpoint),
    the current optimizers keep every slot at its initial value when read back with 3 PS and even
    with 2, and the legacy ones put the values in whole-table copies the updates never use; only 1
    PS came back right. Made first, every slot of Adagrad, Ftrl, Adam and SGD with momentum, both
    generations, restores identically into 3, 2 or 1 PS. So a resumed ``fit`` keeps its optimizer's
    state, and a checkpoint written with N PS resumes with M.
    """
    optimizers = [o for o in objects.values() if hasattr(o, "apply_gradients")]
    variables = [v for o in objects.values() if not hasattr(o, "apply_gradients")
                 for v in getattr(o, "trainable_variables", None) or []]
    if not optimizers or not variables:
        return  # a model not built yet has nothing to make slots for; its first step makes them
    for opt in optimizers:
        if hasattr(opt, "_create_all_weights"):      # tf_keras legacy (OptimizerV2)
            opt._create_all_weights(variables)
        elif not getattr(opt, "built", False):       # tf_keras current (idempotent) and Keras 3
            opt.build(variables)


class Checkpointer:
    """Created by :meth:`elearn.TrainContext.checkpoint`; see there for an example.

    Attributes:
        step: the step of the restored checkpoint (0 when starting fresh).
        restored_from: the checkpoint path restored, or None.
    """

    def __init__(self, directory, objects: dict, *, every_steps: int | None = None,
                 every_seconds: float | None = None, max_to_keep: int = 3, coordinator=None,
                 on_save=None, source=None, options=None, announce: bool = True, scope=None):
        """``directory``: a path, or an ``elearn.train.outputs.CheckpointStore`` that also keeps
        each save where the user asked. ``source``: the store the latest checkpoint is restored
        from when it is not ``directory``'s (an allreduce worker other than the chief restores the
        chief's and saves its own). ``scope``: the strategy's ``scope`` (optimizer slots made
        before a restore are made there)."""
        import tensorflow as tf

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
            with scope() if scope is not None else contextlib.nullcontext():
                create_optimizer_slots(objects)
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
