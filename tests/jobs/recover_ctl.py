"""A checkpointed custom loop that reports its progress, for fault-injection tests.

Each round of args["round"] (20) steps appends {"step": ...} to args["progress"]; each (re)start of train appends
{"start": step, "restored": path}. Training is paced by args["pause"] seconds per round so a test
can inject a fault mid-training, and ends early once the file args["stop"] exists.
"""
import os
import time

import tensorflow as tf
from common import FEATURES, linear_frame, record

from elearn import SparkTFJob



class Linear(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable(tf.zeros([len(FEATURES)]), name="w")
        self.b = tf.Variable(0.0, name="b")

    @tf.function(input_signature=[tf.TensorSpec([None, len(FEATURES)], tf.float32)])
    def __call__(self, x):
        return tf.linalg.matvec(x, self.w) + self.b


class RecoverLoop(SparkTFJob):
    def pre_train(self, spark):
        return linear_frame(spark)

    def train(self, ctx):
        with ctx.strategy.scope():
            model = Linear()
        ckpt = ctx.checkpoint(model=model, every_steps=int(self.args.get("every", 40)))
        record(self.args, "progress", {"start": ckpt.step, "restored": ckpt.restored_from,
                                       "pid": os.getpid(), "time": time.time()})

        @tf.function
        def step(iterator):
            def replica(features, y):
                x = tf.stack([features[f] for f in FEATURES], axis=1)
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean((model(x) - y) ** 2)
                gw, gb = tape.gradient(loss, [model.w, model.b])
                model.w.assign_sub(0.1 * gw)
                model.b.assign_sub(0.1 * gb)
                return loss
            return ctx.strategy.run(replica, args=next(iterator))

        iterator = iter(ctx.coordinator.create_per_worker_dataset(
            ctx.dataset_fn(label="y", batch_size=64)))
        total, pause = int(self.args.get("steps", 240)), float(self.args.get("pause", 0.4))
        rounds = int(self.args.get("round", 20))
        current = ckpt.step
        while current < total and not os.path.exists(self.args.get("stop", "")):
            for _ in range(rounds):
                ctx.coordinator.schedule(step, args=(iterator,))
            ctx.coordinator.join()
            current += rounds
            saved = ckpt.maybe_save(current)
            record(self.args, "progress", {"step": current, "saved": bool(saved), "time": time.time()})
            ctx.report(step=current)
            time.sleep(pause)
        ckpt.save(current)
        record(self.args, "out", {"w": model.w.numpy().tolist(), "b": float(model.b.numpy())})
        return model

    def shutdown(self):
        record(self.args, "marker", {"shutdown": True})
