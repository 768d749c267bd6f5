"""Quickstart: learn y = 2*x0 - 3*x1 + 0.5*x2 + 1 from a Spark DataFrame on a PS cluster.

    pl_submit examples/quickstart/linear_job.py --ps 1 --workers 2
"""
from pyspark.sql import functions as F

from elearn import SparkTFJob

TRUE_W = [2.0, -3.0, 0.5]
TRUE_B = 1.0


class LinearJob(SparkTFJob):
    def pre_train(self, spark):
        rows = int(self.args.get("rows", 20000))
        df = spark.range(rows, numPartitions=4)
        for i in range(len(TRUE_W)):
            df = df.withColumn(f"x{i}", F.rand(seed=i).cast("float"))
        y = sum(F.col(f"x{i}") * w for i, w in enumerate(TRUE_W)) + TRUE_B
        return df.withColumn("y", (y + F.randn(seed=9) * 0.01).cast("float")).drop("id")

    def train(self, ctx):
        keras = ctx.keras
        features = [f"x{i}" for i in range(len(TRUE_W))]
        with ctx.strategy.scope():
            inputs = {f: keras.Input(shape=(), name=f) for f in features}
            stacked = keras.layers.Concatenate()([keras.layers.Reshape((1,))(inputs[f]) for f in features])
            outputs = keras.layers.Dense(1, name="linear")(stacked)
            model = keras.Model(inputs, outputs)
            model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse",
                          steps_per_execution=int(self.args.get("steps_per_execution", 10)))
        batch = 128
        model.fit(ctx.dataset(label="y", batch_size=batch), epochs=int(self.args.get("epochs", 4)),
                  steps_per_epoch=ctx.steps_per_epoch(batch), verbose=0,
                  callbacks=[ctx.progress_callback(batch_size=batch)])
        kernel, bias = model.get_layer("linear").get_weights()
        print("learned weights", kernel.ravel().round(3).tolist(), "bias", round(float(bias[0]), 3))
        return model
