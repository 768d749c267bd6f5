"""What elearn adds to every Keras ``Model.fit`` that ``train`` calls: checkpoints and progress.

Recovery must not depend on the user remembering a callback. In the training process, ``fit`` of
both Keras implementations (``tf_keras`` and Keras 3) is wrapped so that every call:

- restores the latest checkpoint of that ``fit`` (model, optimizer, the epochs done) before it
  starts, and starts at the epoch after the last one saved (``initial_epoch``);
- saves a checkpoint at the end of every epoch and, with ``--checkpoint-every N`` (steps) or
  ``--checkpoint-every 10m`` (time), within long epochs too; a restart resumes at the start of the
  epoch such a checkpoint was taken in, with the weights as saved;
- reports the step, loss and metrics (``ctx.report``), so the summary has them;
- the first one says so when the optimizer rewrites whole embedding tables every step, and in
  allreduce mode when the model's tables will be read whole every step (``elearn.train.optimizers``).

The user's own callbacks still run. A ``fit`` given its own ``BackupAndRestore`` keeps it and gets
no elearn checkpoints; ``--checkpoint-every off`` turns them off. Each ``fit`` call of ``train`` has
its own directory (``<checkpoint_dir>/fit-0``, ``fit-1``, ...), so a job that fits twice resumes in
the right one, and a ``fit`` that already finished before the restart does not train again.

Checkpoints are :class:`elearn.train.checkpoint.Checkpointer` objects over ``tf.train.Checkpoint``
(``model``, ``optimizer``, ``epoch``), so they are written and restored the way ``ctx.checkpoint``
ones are, including the mode's I/O device and, in allreduce mode, every worker saving at the same
steps (saving may run collectives) with only the chief's copy kept.
"""
from __future__ import annotations

import importlib
import importlib.abc
import sys
from dataclasses import dataclass

from elearn.errors import ElearnError
from elearn.train.optimizers import dense_update_warning, mirrored_tables_warning, sparse_lookup_layers
from elearn.train.tfimport import real_spec

PATCHED = "_elearn_fit"


@dataclass(frozen=True)
class CheckpointEvery:
    """``--checkpoint-every``: ``epoch`` (the default), ``N`` steps, ``Ns``/``Nm``/``Nh`` or ``off``."""

    epochs: bool = True
    steps: int | None = None
    seconds: float | None = None

    @staticmethod
    def parse(text) -> "CheckpointEvery":
        value = str(text).strip().lower()
        if value == "epoch":
            return CheckpointEvery()
        if value == "off":
            return CheckpointEvery(epochs=False)
        units = {"s": 1, "m": 60, "h": 3600}
        try:
            if value[-1:] in units:
                seconds = float(value[:-1]) * units[value[-1]]
                if seconds > 0:
                    return CheckpointEvery(seconds=seconds)
            elif int(value) > 0:
                return CheckpointEvery(steps=int(value))
        except ValueError:
            pass
        raise ElearnError(f"--checkpoint-every {text!r}: use epoch, a number of steps (500), a time "
                          "(90s, 10m, 1h) or off")

    @property
    def enabled(self) -> bool:
        return self.epochs


def instrument(ctx, every: CheckpointEvery) -> None:
    """Wrap ``fit`` of every Keras implementation loaded now or imported later in this process."""
    state = {"calls": 0}
    for name in KERAS:
        if name in sys.modules:
            _patch(sys.modules[name], ctx, every, state)
    sys.meta_path.insert(0, _PatchOnImport(lambda module: _patch(module, ctx, every, state)))


KERAS = ("tf_keras", "keras")


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches a Keras implementation right after the job imports it: the real finder's spec, with
    a loader that runs the real one and then the patch."""

    def __init__(self, patch):
        self.patch = patch

    def find_spec(self, name, path=None, target=None):
        if name not in KERAS:
            return None
        spec = real_spec(self, name, path, target)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _ThenPatch(spec.loader, self.patch)
        return spec


class _ThenPatch(importlib.abc.Loader):
    def __init__(self, loader, patch):
        self.loader, self.patch = loader, patch

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.patch(module)


def _patch(keras, ctx, every: CheckpointEvery, state: dict) -> None:
    model_class = getattr(keras, "Model", None)
    if model_class is None:
        return
    if getattr(model_class.fit, PATCHED, False):
        return
    original = model_class.fit

    def fit(self, *args, **kwargs):
        callbacks = list(kwargs.get("callbacks") or [])
        number = state["calls"]
        state["calls"] += 1
        if number == 0 and ctx.is_chief:   # once, where the user reads it (the chief's output)
            mirrored = ctx.mode == "allreduce"
            notes = [dense_update_warning(self, mirrored=mirrored)]
            if mirrored:
                notes.append(mirrored_tables_warning(self))
            for note in filter(None, notes):
                print(f"[elearn] warning: {note}", flush=True)
        if ctx.mode == "allreduce" and ctx.num_workers > 1:
            _one_step_per_call_for_sparse_lookups(self, ctx)
        build_slots_in_place(self, ctx)
        ours = next((c for c in callbacks if isinstance(c, FitCheckpointBase)), None)
        theirs = any(type(c).__name__ == "BackupAndRestore" for c in callbacks)
        if ours is None and every.enabled and not theirs:
            ours = fit_checkpoint(keras, ctx, every)
            callbacks.append(ours)
        if ours is not None:
            start = ours.restore(self, number)
            if start > kwargs.get("initial_epoch", 0):
                kwargs["initial_epoch"] = start
        if not any(getattr(c, "_elearn_progress", False) for c in callbacks):
            callbacks.append(ctx.progress_callback(keras=keras, batch_size=_batch_size(kwargs)))
        kwargs["callbacks"] = callbacks
        return original(self, *args, **kwargs)

    setattr(fit, PATCHED, True)
    model_class.fit = fit


def build_slots_in_place(model, ctx) -> None:
    """PS mode: build a tf_keras optimizer's slots on a parameter server, before ``fit`` would build
    them on the coordinator.

    tf_keras's current optimizers compute each slot's initial value as a full-size tensor where
    ``build`` runs (``Adagrad``: ``Constant(0.1)(shape=var.shape)``) and then create the slot next
    to its variable. ``fit`` builds on the coordinator: measured with a 5M x 16 table (305 MiB),
    the coordinator's peak rose by 934 MiB and 325 MiB of it stayed; built here under
    ``backend.slot_device``, the coordinator does not grow, and a slot whose variable lives on
    another parameter server is copied there from the first one, not through the coordinator
    (``bench/README.md``). The legacy optimizers create slots in place already; a subclassed model,
    which may create variables in its first call, is left to ``fit``.
    """
    device = ctx._backend.slot_device
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)   # a LossScaleOptimizer's own
    current = getattr(getattr(ctx.keras, "optimizers", None), "Optimizer", None)  # not the legacy base
    if device is None or current is None or not isinstance(optimizer, current) \
            or getattr(optimizer, "_built", False):
        return  # allreduce mode, a legacy or no optimizer, or one built already
    # Only a functional or Sequential model has every variable before its first step: the optimizer
    # is built once, and a variable it was not built with would fail at apply_gradients.
    if not getattr(model, "_is_graph_network", False) or not model.trainable_variables:
        return
    import tensorflow as tf

    # As fit's own apply_gradients does: its name scope, init scope, the model's trainable variables.
    with ctx.strategy.scope(), tf.name_scope(optimizer.name or "optimizer"), tf.init_scope(), \
            tf.device(device):
        optimizer.build(model.trainable_variables)


def _one_step_per_call_for_sparse_lookups(model, ctx) -> None:
    """Allreduce mode, several workers, a tf_keras model with embedding lookups: one step per call.

    Their gradients are ``IndexedSlices`` of each worker's own rows, all-gathered with a branch on
    whether every worker has as many rows; inside the loop of a ``steps_per_execution`` call the
    workers' gathers meet mismatched ("Shape mismatch in the collective instance ... expected shape
    [1758,8] but another member in the group expected shape [1752,8]", examples/ctr_criteo with
    ``steps_per_execution=25`` on two workers; one step per call trains). Every worker decides
    alike, from the model, so all run the same steps. Keras 3 runs one step per call there anyway
    (``elearn.mpi.keras_fixes``)."""
    steps = getattr(model, "_steps_per_execution", None)   # tf_keras: a variable; Keras 3: absent
    if steps is None or not hasattr(steps, "assign") or int(steps.numpy()) <= 1:
        return
    layers = sparse_lookup_layers(model)
    if not layers:
        return
    if ctx.is_chief:
        print(f"[elearn] {ctx.num_workers} allreduce workers run 1 step per execution, not "
              f"{int(steps.numpy())}: TensorFlow's all-gather of the sparse gradients of "
              f"{', '.join(layers)} fails inside a call of several steps", flush=True)
    steps.assign(1)
    model.train_function = None   # rebuilt for one step per call


def _batch_size(kwargs) -> int | None:
    size = kwargs.get("batch_size")
    return int(size) if isinstance(size, int) else None


class FitCheckpointBase:
    """Marker base: a callback that is elearn's checkpoint of one ``fit``."""


def fit_checkpoint(keras, ctx, every: CheckpointEvery | None = None):
    """elearn's checkpoint callback for a model of the Keras module ``keras`` (also what
    ``ctx.backup_callback()`` returns)."""
    every = every or CheckpointEvery()

    class FitCheckpoint(keras.callbacks.Callback, FitCheckpointBase):
        def __init__(self):
            super().__init__()
            # Batch hooks under ParameterServerStrategy are allowed for callbacks that take the
            # strategy's remote logs as they are (this one reads no logs).
            self._supports_tf_logs = True
            self.checkpointer = None
            self.epoch = 0
            self._restored = None      # (epoch, path) to record once fit knows its steps
            self._checked = 0          # the step of the last time-based check

        def restore(self, model, number: int) -> int:
            """Restore this ``fit``'s latest checkpoint into ``model``; the epoch to start at."""
            import tensorflow as tf

            self._epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="elearn_epoch")
            objects = {"model": model, "epoch": self._epoch_var}
            if getattr(model, "optimizer", None) is not None:
                objects["optimizer"] = model.optimizer
            self.checkpointer = ctx._checkpointer(f"fit-{number}", objects, every_steps=every.steps,
                                                 every_seconds=every.seconds)
            start = int(self._epoch_var.numpy())
            if self.checkpointer.restored_from:
                print(f"[elearn] fit resumes at epoch {start + 1} from {self.checkpointer.restored_from}",
                      flush=True)
                self._restored = (start, self.checkpointer.restored_from)
            elif ctx.attempt:
                print("[elearn] no checkpoint yet: fit restarts from the beginning", flush=True)
                self._restored = (0, None)
            return start

        def _implements_train_batch_hooks(self):
            return every.steps is not None or every.seconds is not None

        def _steps(self) -> int:
            return (self.params or {}).get("steps") or 0

        def on_train_begin(self, logs=None):
            if self._restored is not None:
                epoch, path = self._restored
                ctx._record("restore", step=epoch * self._steps(), epoch=epoch, path=path)

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.checkpointer is None or not self._implements_train_batch_hooks():
                return
            step = self.epoch * self._steps() + batch + 1
            if every.steps is not None:
                due = self.checkpointer.due(step)
            elif step - self._checked >= ctx._backend.time_check_steps:
                # Every worker must save at the same step: a time-based decision is agreed on.
                self._checked = step
                due = ctx._backend.agree(ctx, self.checkpointer.due(step))
            else:
                due = False
            if due:
                self._epoch_var.assign(self.epoch)  # resumes at this epoch's start
                self.checkpointer.save(step)

        def on_epoch_end(self, epoch, logs=None):
            if self.checkpointer is not None:
                self._epoch_var.assign(epoch + 1)
                self.checkpointer.save((epoch + 1) * self._steps())

    return FitCheckpoint()
