"""The Keras progress callback behind ``TrainContext.progress_callback`` (added to every ``fit``).

It reports the global step, examples/s and Keras' logs through ``ctx.report`` at the end of every
epoch and, where the mode allows batch-level callbacks with logs (allreduce), every
``every_seconds`` within an epoch. In both modes it also notes the step reached about once a second
without printing it, so a restart knows how many steps it lost even within an epoch. Under
``ParameterServerStrategy`` a batch hook sees steps as they are scheduled, a few ahead of those done.
"""
from __future__ import annotations

import time

STEP_NOTE_SECONDS = 1.0


def make_progress_callback(ctx, every_seconds: float, batch_size: int | None, keras):
    class Progress(keras.callbacks.Callback):
        _elearn_progress = True

        def __init__(self):
            super().__init__()
            # Batch hooks under ParameterServerStrategy are allowed for callbacks that take the
            # strategy's remote logs as they are; this one reads logs there only at epoch ends.
            self._supports_tf_logs = True
            self.step = 0
            self._epoch = 0
            self._t = self._noted = time.monotonic()
            self._step_at_t = 0

        def _report(self, logs):
            now = time.monotonic()
            done = self.step - self._step_at_t
            extra = {}
            if batch_size and now > self._t and done:
                extra["examples_per_sec"] = done * batch_size / (now - self._t)
            self._t, self._step_at_t = now, self.step
            metrics = {k: float(v) for k, v in (logs or {}).items() if _scalar(v)}
            ctx.report(step=self.step, **metrics, **extra)

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

        def on_epoch_end(self, epoch, logs=None):
            self.step = (epoch + 1) * ((self.params or {}).get("steps") or 0)
            self._report(logs)

        def on_train_batch_end(self, batch, logs=None):
            # With steps_per_execution > 1 Keras calls this once per execution, with the index of
            # the execution's last batch: derive the global step from it rather than counting calls.
            per_epoch = (self.params or {}).get("steps") or 0
            self.step = self._epoch * per_epoch + batch + 1
            now = time.monotonic()
            if ctx._backend.batch_hooks and now - self._t >= every_seconds:
                self._report(logs)
            elif now - self._noted >= STEP_NOTE_SECONDS:
                self._noted = now
                ctx._note_step(self.step)

    return Progress()


def _scalar(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False
