"""PS-mode feed check: which ids each worker's TF process read per epoch, and fit with validation.

The input is skewed on purpose (every row in one Spark partition). ``train`` drains every worker's
dataset once per epoch with ``coordinator.schedule`` and records, per epoch, the ids each worker
index returned; then fits a linear model with ``validation_data``. With ``--arg fail=1`` it raises
at the end so the test can check that the spools are removed after a failed run too.
"""
import os

import tensorflow as tf
from common import record
from pyspark.sql import functions as F

from elearn import SparkTFJob

ROWS, VAL_ROWS = 3000, 600


def linear(df):
    x = (F.rand(seed=5) * 2 - 1).cast("float")
    return df.select("id", x.alias("x")).withColumn("y", (F.col("x") * 3.0 + 1.0).cast("float"))


class FeedIds(SparkTFJob):
    def pre_train(self, spark):
        return {"train": linear(spark.range(ROWS, numPartitions=1)),
                "validation": linear(spark.range(ROWS, ROWS + VAL_ROWS, numPartitions=1))}

    def train(self, ctx):
        info = ctx.feeds["train"]
        record(self.args, "out", {"event": "spools", "dirs": info.dirs + ctx.feeds["validation"].dirs,
                                  "exist": all(os.path.isdir(d) for d in info.dirs),
                                  "rows": info.rows, "total": ctx.rows(),
                                  "validation_rows": ctx.rows("validation"),
                                  "steps": ctx.steps_per_epoch(64)})
        per_worker = ctx.coordinator.create_per_worker_dataset(
            ctx.dataset_fn(features=["id"], batch_size=64, shuffle=True, repeat=False))

        @tf.function
        def drain(iterator):
            ids = tf.TensorArray(tf.int64, size=0, dynamic_size=True, infer_shape=False,
                                 element_shape=tf.TensorShape([None]))
            k = tf.constant(0)
            opt = iterator.get_next_as_optional()
            while opt.has_value():
                ids = ids.write(k, opt.get_value()["id"])
                k += 1
                opt = iterator.get_next_as_optional()
            return tf.distribute.coordinator.experimental_get_current_worker_index(), ids.concat()

        for epoch in range(2):
            iterator = iter(per_worker)  # a fresh pass over every worker's spool
            seen = {}
            for _ in range(20):  # rounds until every worker has drained its iterator
                futures = [ctx.coordinator.schedule(drain, args=(iterator,))
                           for _ in range(ctx.num_workers)]
                ctx.coordinator.join()
                for fut in futures:
                    worker, ids = fut.fetch()
                    seen.setdefault(int(worker), []).extend(int(i) for i in ids)
                if len([w for w, v in seen.items() if v]) == ctx.num_workers:
                    break
            record(self.args, "out", {"event": "epoch", "epoch": epoch,
                                      "ids": {str(w): v for w, v in seen.items()}})

        keras = ctx.keras
        with ctx.strategy.scope():
            inp = keras.Input(shape=(), name="x")
            model = keras.Model({"x": inp}, keras.layers.Dense(1, name="linear")(
                keras.layers.Reshape((1,))(inp)))
            model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
        history = model.fit(
            ctx.dataset(label="y", features=["x"], batch_size=64), epochs=4,
            steps_per_epoch=ctx.steps_per_epoch(64),
            validation_data=ctx.dataset("validation", label="y", features=["x"], batch_size=64),
            validation_steps=ctx.steps_per_epoch(64, "validation"), verbose=0)
        kernel, bias = model.get_layer("linear").get_weights()
        record(self.args, "out", {"event": "fit", "val_loss": history.history.get("val_loss"),
                                  "loss": history.history["loss"], "w": float(kernel.ravel()[0]),
                                  "b": float(bias[0])})
        if self.args.get("fail"):
            raise RuntimeError("failing on purpose after training")
        return model
