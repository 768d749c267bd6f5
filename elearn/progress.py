"""The Keras progress callback behind ``TrainContext.progress_callback``."""
from __future__ import annotations

import time


def make_progress_callback(ctx, every_seconds: float, batch_size: int | None):
    keras = ctx.keras
    if keras is None:
        import tf_keras as keras

    class EpochProgress(keras.callbacks.Callback):
        """Reports the global step, examples/s and Keras' logs at the end of every epoch."""

        def __init__(self):
            super().__init__()
            self.step = 0
            self._t = time.monotonic()
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

    if ctx.mode == "ps":
        # tf_keras refuses batch-level callbacks under ParameterServerStrategy.
        return EpochProgress()

    class BatchProgress(EpochProgress):
        """Also reports every ``every_seconds`` within an epoch."""

        def on_train_batch_end(self, batch, logs=None):
            # With steps_per_execution > 1 Keras calls this once per execution, with the index of
            # the execution's last batch: derive the global step from it rather than counting calls.
            per_epoch = (self.params or {}).get("steps") or 0
            self.step = getattr(self, "_epoch", 0) * per_epoch + batch + 1
            if time.monotonic() - self._t >= every_seconds:
                self._report(logs)

    return BatchProgress()


def _scalar(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False
