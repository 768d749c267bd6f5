"""Quickstart: learn y = 2*x0 - 3*x1 + 0.5*x2 + 1 from a Spark DataFrame on a PS cluster, then
score new rows with the exported model on Spark's executors.

    pl_submit examples/quickstart/linear_job.py --ps 1 --workers 2
"""
from pyspark.sql import functions as F

from elearn import SparkTFJob

TRUE_W = [2.0, -3.0, 0.5]
TRUE_B = 1.0
FEATURES = [f"x{i}" for i in range(len(TRUE_W))]


def features(spark, rows, seed=0):
    """``rows`` random inputs x0..x2 in [0, 1) (``seed`` picks which)."""
    df = spark.range(rows, numPartitions=4)
    for i, f in enumerate(FEATURES):
        df = df.withColumn(f, F.rand(seed=seed + i).cast("float"))
    return df.drop("id")


def truth():
    """The planted function, as a Spark column."""
    return sum(F.col(f) * w for f, w in zip(FEATURES, TRUE_W)) + TRUE_B


class LinearJob(SparkTFJob):
    def pre_train(self, spark):
        df = features(spark, int(self.args.get("rows", 20000)))
        return df.withColumn("y", (truth() + F.randn(seed=9) * 0.01).cast("float"))

    def train(self, ctx):
        keras = ctx.keras
        with ctx.strategy.scope():
            inputs = {f: keras.Input(shape=(), name=f) for f in FEATURES}
            stacked = keras.layers.Concatenate()([keras.layers.Reshape((1,))(inputs[f]) for f in FEATURES])
            outputs = keras.layers.Dense(1, name="linear")(stacked)
            model = keras.Model(inputs, outputs)
            model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse",
                          steps_per_execution=int(self.args.get("steps_per_execution", 10)))
        batch = 128
        model.fit(ctx.dataset(label="y", batch_size=batch), epochs=int(self.args.get("epochs", 4)),
                  steps_per_epoch=ctx.steps_per_epoch(batch), verbose=0,
                  callbacks=[ctx.progress_callback(batch_size=batch)])
        kernel, bias = model.get_layer("linear").get_weights()
        print("learned weights", [round(float(w), 3) for w in kernel.ravel()], "bias", round(float(bias[0]), 3))
        return model

    def post_train(self, spark, model_dir):
        import elearn

        # Rows the model has not seen, scored on the executors with the model just exported
        # (each Spark Python worker loads it once); `truth` is what the true weights give.
        new = features(spark, int(self.args.get("score_rows", 1000)), seed=100).withColumn("truth", truth())
        scored = elearn.predict(new, model_dir).cache()
        print(f"scored with elearn.predict({model_dir!r}):")
        for r in scored.limit(3).collect():
            print(f"  x=[{r.x0:.3f}, {r.x1:.3f}, {r.x2:.3f}]  prediction {r.prediction:.4f}  "
                  f"true {r.truth:.4f}")
        error = F.abs(F.col("prediction") - F.col("truth"))
        got = scored.agg(F.count(F.lit(1)).alias("n"), F.avg(error).alias("mean"), F.max(error).alias("max")).first()
        print(f"error against the true weights on {got['n']} new rows: mean {got['mean']:.4f}, "
              f"max {got['max']:.4f}")
        scored.unpersist()
