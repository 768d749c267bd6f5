"""A custom training loop with ClusterCoordinator.schedule; returns a tf.Module to export."""
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


class LinearLoop(SparkTFJob):
    def pre_train(self, spark):
        return linear_frame(spark)

    def train(self, ctx):
        with ctx.strategy.scope():
            model = Linear()
            lr = 0.1

        @tf.function
        def step(iterator):
            def replica(features, y):
                x = tf.stack([features[f] for f in FEATURES], axis=1)
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean((model(x) - y) ** 2)
                gw, gb = tape.gradient(loss, [model.w, model.b])
                model.w.assign_sub(lr * gw)
                model.b.assign_sub(lr * gb)
                return loss
            features, y = next(iterator)
            return ctx.strategy.run(replica, args=(features, y))

        data = ctx.coordinator.create_per_worker_dataset(ctx.dataset_fn(label="y", batch_size=64))
        iterator = iter(data)
        losses = []
        for _ in range(int(self.args.get("steps", 600)) // 20):
            futures = [ctx.coordinator.schedule(step, args=(iterator,)) for _ in range(20)]
            ctx.coordinator.join()
            losses.append(float(futures[-1].fetch()))
        record(self.args, "out", {"w": model.w.numpy().tolist(), "b": float(model.b.numpy()),
                                  "loss": losses[-1]})
        return model

    def shutdown(self):
        record(self.args, "marker", {"shutdown": True})
