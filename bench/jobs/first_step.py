"""Bench job: records when the first training step finished and when train returned."""
import json
import time

import tensorflow as tf
from pyspark.sql import functions as F

from elearn import SparkTFJob


class FirstStep(SparkTFJob):
    def pre_train(self, spark):
        df = spark.range(20000, numPartitions=4)
        return df.select(F.rand(seed=1).cast("float").alias("x"), F.rand(seed=2).cast("float").alias("y"))

    def train(self, ctx):
        with ctx.strategy.scope():
            w = tf.Variable(0.0)

        @tf.function
        def step(iterator):
            def replica(features, y):
                w.assign_add(tf.reduce_mean(features["x"] - y) * 0.0)
            ctx.strategy.run(replica, args=next(iterator))

        it = iter(ctx.coordinator.create_per_worker_dataset(ctx.dataset_fn(label="y", batch_size=64)))
        ctx.coordinator.schedule(step, args=(it,))
        ctx.coordinator.join()
        first = time.time()
        for _ in range(50):
            ctx.coordinator.schedule(step, args=(it,))
        ctx.coordinator.join()
        with open(self.args["out"], "w") as f:
            json.dump({"first_step": first, "train_end": time.time()}, f)
