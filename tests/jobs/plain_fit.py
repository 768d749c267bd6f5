"""A newcomer's job: a Keras classifier and a plain ``fit`` with no callbacks at all.

``ctx.keras`` is tf_keras in PS mode and Keras 3 in allreduce mode. Args: ``rows``, ``epochs`` (12),
``out`` (JSON lines: the chief's accuracy on held-out rows).
"""
import numpy as np
from common import record
from pyspark.sql import functions as F

from elearn import SparkTFJob

WEIGHTS = [1.5, -2.0, 1.0, 0.5, -1.0, 2.5]
FEATURES = [f"f{i}" for i in range(len(WEIGHTS))]


class PlainFit(SparkTFJob):
    def pre_train(self, spark):
        df = spark.range(int(self.args.get("rows", 40000)), numPartitions=4)
        for i, f in enumerate(FEATURES):
            df = df.withColumn(f, (F.rand(seed=i) * 2 - 1).cast("float"))
        score = sum(F.col(f) * w for f, w in zip(FEATURES, WEIGHTS))
        return df.withColumn("label", (score > 0.2).cast("long")).drop("id")

    def train(self, ctx):
        keras = ctx.keras
        with ctx.strategy.scope():
            inputs = {f: keras.Input(shape=(), name=f) for f in FEATURES}
            x = keras.layers.Concatenate()([keras.layers.Reshape((1,))(inputs[f]) for f in FEATURES])
            x = keras.layers.Dense(16, activation="relu")(x)
            model = keras.Model(inputs, keras.layers.Dense(2)(x))
            model.compile(optimizer=keras.optimizers.Adam(0.01), metrics=["accuracy"],
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        batch = 50
        model.fit(ctx.dataset(label="label", batch_size=batch), epochs=int(self.args.get("epochs", 12)),
                  steps_per_epoch=ctx.steps_per_epoch(batch), verbose=0)
        test = np.random.default_rng(7).uniform(-1, 1, (2000, len(WEIGHTS))).astype(np.float32)
        logits = model({f: test[:, i] for i, f in enumerate(FEATURES)}, training=False)
        labels = (test @ np.array(WEIGHTS, dtype=np.float32) > 0.2).astype(np.int64)
        accuracy = float(np.mean(np.argmax(np.asarray(logits), axis=1) == labels))
        if ctx.is_chief:
            record(self.args, "out", {"accuracy": accuracy})
        return model
