"""Pieces the test jobs share: synthetic linear data made with Spark, and observable markers."""
import json
import os

from pyspark.sql import functions as F

TRUE_W = [2.0, -3.0, 0.5, 1.5]
TRUE_B = 1.0
FEATURES = [f"x{i}" for i in range(len(TRUE_W))]


def linear_frame(spark, rows=20000, partitions=4):
    df = spark.range(rows, numPartitions=partitions)
    for i in range(len(TRUE_W)):
        df = df.withColumn(f"x{i}", (F.rand(seed=i) * 2 - 1).cast("float"))
    y = sum(F.col(f) * w for f, w in zip(FEATURES, TRUE_W)) + TRUE_B
    return df.withColumn("y", (y + F.randn(seed=99) * 0.01).cast("float")).drop("id")


def linear_model(keras, **compile_args):
    """``y = w . x + b`` over FEATURES as a Keras model (its Dense layer is named "linear"),
    compiled with Adam(0.05) and MSE; build it under ``ctx.strategy.scope()``."""
    inputs = {f: keras.Input(shape=(), name=f) for f in FEATURES}
    x = keras.layers.Concatenate()([keras.layers.Reshape((1,))(inputs[f]) for f in FEATURES])
    model = keras.Model(inputs, keras.layers.Dense(1, name="linear")(x))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse", **compile_args)
    return model


def record(args, key, payload):
    """Append a JSON line to the file named by ``args[key]`` (if the test gave one)."""
    path = args.get(key)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(payload) + "\n")
            f.flush()
            os.fsync(f.fileno())
