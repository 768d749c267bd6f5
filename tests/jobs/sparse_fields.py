"""Categorical fields as a user writes them: a string id and an array<string> of tags, fed from
Spark, embedded with elearn.FieldEmbeddings, trained in either mode and exported.

The label is planted: 1 when the user is one of every third user or the row carries tag t1, so a
model that learned scores far above the base rate. Arguments: rows (table rows for the user
field), optimizer (adagrad | adam), epochs, keras (tf_keras: build with tf_keras in allreduce mode
too, with its legacy Adagrad, the row-wise one there), steps_per_execution (default 1), out (a
JSON-lines file for what train saw).
"""
import importlib

from common import record
from pyspark.sql import functions as F

import elearn
from elearn import SparkTFJob


class SparseFields(SparkTFJob):
    def pre_train(self, spark):
        df = spark.range(6000, numPartitions=4)
        user = (F.abs(F.hash(F.col("id"), F.lit(1))) % 300)
        tags = F.expr("transform(sequence(0, cast(abs(hash(id, 2)) % 4 as int) - 1), "
                      "i -> concat('t', cast(abs(hash(id, i, 3)) % 8 as string)))")
        df = df.select(F.concat(F.lit("u"), user.cast("string")).alias("user"), tags.alias("tags"),
                       (((user % 3) == 0) | F.array_contains(tags, "t1")).cast("float").alias("label"))
        return df

    def train(self, ctx):
        keras = importlib.import_module(self.args["keras"]) if "keras" in self.args else ctx.keras
        legacy = keras.__name__ == "tf_keras" and ctx.mode == "allreduce"
        rows = int(self.args.get("rows", 1000))
        with ctx.strategy.scope():
            emb = elearn.FieldEmbeddings({"user": rows, "tags": 64}, 16, keras=keras)
            inputs = {"user": keras.Input((), dtype="string", name="user"),
                      "tags": keras.Input((None,), dtype="string", name="tags")}
            hidden = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(emb(inputs)))
            model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden))
            optimizer = (keras.optimizers.Adam(0.01) if self.args.get("optimizer") == "adam"
                         else keras.optimizers.legacy.Adagrad(0.5) if legacy else keras.optimizers.Adagrad(0.5))
            model.compile(optimizer, "binary_crossentropy", metrics=["accuracy"],
                          steps_per_execution=int(self.args.get("steps_per_execution", 1)))
        batch = 256
        history = model.fit(ctx.dataset(label="label", batch_size=batch), epochs=int(self.args.get("epochs", 3)),
                            steps_per_epoch=ctx.steps_per_epoch(batch), verbose=0)
        record(self.args, "out", {"mode": ctx.mode, "loss": history.history["loss"],
                                  "accuracy": history.history["accuracy"]})
        return model
