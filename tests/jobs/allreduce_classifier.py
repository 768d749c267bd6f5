"""A dense binary classifier in allreduce mode, on data made with Spark in pre_train.

Args: ``keras`` (``keras`` or ``tf_keras``), ``epochs``, ``rows``, ``out`` (JSON lines: the
chief's accuracy on held-out rows), ``epochs_file`` (JSON lines: each epoch the chief begins),
``kill_at`` (``"EPOCH:BATCH"``: worker 1's TF process SIGKILLs itself there, once, marked by the
file ``kill_marker``), ``tensorboard`` (any value: the chief writes TensorBoard events to
``ctx.log_dir``), ``freeze_at`` (the same, but SIGSTOP: the process hangs, heartbeat and
all), ``fail_worker`` (that worker's train raises, every attempt).
"""
import importlib
import os
import signal

import numpy as np
from common import record
from pyspark.sql import functions as F

from elearn import SparkTFJob

N_FEATURES = 6
WEIGHTS = [1.5, -2.0, 1.0, 0.5, -1.0, 2.5]
FEATURES = [f"f{i}" for i in range(N_FEATURES)]


def label_of(x):
    return (x @ np.array(WEIGHTS, dtype=np.float32) > 0.2).astype(np.int64)


class AllreduceClassifier(SparkTFJob):
    def pre_train(self, spark):
        df = spark.range(int(self.args.get("rows", 4001)), numPartitions=3)
        for i, f in enumerate(FEATURES):
            df = df.withColumn(f, (F.rand(seed=i) * 2 - 1).cast("float"))
        score = sum(F.col(f) * w for f, w in zip(FEATURES, WEIGHTS))
        return df.withColumn("label", (score > 0.2).cast("long")).drop("id")

    def train(self, ctx):
        keras = importlib.import_module(self.args.get("keras", "keras"))
        if ctx.task_index == self.args.get("fail_worker", -1):
            raise RuntimeError(f"worker {ctx.task_index} cannot train: bad shard on purpose")
        with ctx.strategy.scope():
            inputs = {f: keras.Input(shape=(), name=f) for f in FEATURES}
            x = keras.layers.Concatenate()([keras.layers.Reshape((1,))(inputs[f]) for f in FEATURES])
            x = keras.layers.Dense(16, activation="relu")(x)
            model = keras.Model(inputs, keras.layers.Dense(2)(x))
            model.compile(optimizer=keras.optimizers.Adam(0.02), metrics=["accuracy"],
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        batch = 50
        callbacks = [ctx.backup_callback(keras), Progress(keras, ctx, self.args)]
        if keras is ctx.keras:  # elearn's progress lines are a callback of ctx.keras
            callbacks.append(ctx.progress_callback(every_seconds=60, batch_size=batch))
        if self.args.get("tensorboard"):
            callbacks.append(keras.callbacks.TensorBoard(log_dir=ctx.log_dir))
        model.fit(ctx.dataset(label="label", batch_size=batch), epochs=int(self.args.get("epochs", 4)),
                  steps_per_epoch=ctx.steps_per_epoch(batch), verbose=0, callbacks=callbacks)
        test = np.random.default_rng(7).uniform(-1, 1, (2000, N_FEATURES)).astype(np.float32)
        logits = model({f: test[:, i] for i, f in enumerate(FEATURES)}, training=False)
        accuracy = float(np.mean(np.argmax(np.asarray(logits), axis=1) == label_of(test)))
        if ctx.is_chief:
            record(self.args, "out", {"accuracy": accuracy, "workers": ctx.num_workers,
                                      "rows": ctx.rows(), "keras": keras.__name__})
        return model


def Progress(keras, ctx, args):
    """Records the epochs the chief begins; worker 1 kills (or freezes) itself once at
    ``kill_at`` (``freeze_at``)."""
    how = signal.SIGSTOP if "freeze_at" in args else signal.SIGKILL
    at = args.get("freeze_at", args.get("kill_at", "-1:-1"))
    kill_epoch, kill_batch = (int(v) for v in str(at).split(":"))
    marker = args.get("kill_marker")

    class _Progress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            if ctx.is_chief:
                record(args, "epochs_file", {"epoch": epoch})

        def on_train_batch_end(self, batch, logs=None):
            if (ctx.task_index == 1 and self.epoch == kill_epoch and batch == kill_batch
                    and marker and not os.path.exists(marker)):
                open(marker, "w").close()
                os.kill(os.getpid(), how)

    return _Progress()
