"""Allreduce mode with nothing fed: train makes its own data. ``fail_worker``'s train raises a
ValueError; ``kill_worker``'s process SIGKILLs itself, in every attempt."""
import os
import signal

from elearn import SparkTFJob


class NoFeed(SparkTFJob):
    def train(self, ctx):
        import numpy as np
        import tensorflow as tf

        if ctx.task_index == self.args.get("fail_worker", -1):
            raise ValueError(f"worker {ctx.task_index} cannot train: bad shard on purpose")
        if ctx.task_index == self.args.get("kill_worker", -1):
            os.kill(os.getpid(), signal.SIGKILL)
        keras = ctx.keras
        x = np.random.default_rng(ctx.task_index).normal(size=(256, 4)).astype("float32")
        y = x.sum(axis=1, keepdims=True)

        def per_worker(_):
            return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(32)

        with ctx.strategy.scope():
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
            model.compile(optimizer="sgd", loss="mse")
        model.fit(ctx.strategy.distribute_datasets_from_function(per_worker), epochs=1,
                  steps_per_epoch=8, verbose=0)
        return None
