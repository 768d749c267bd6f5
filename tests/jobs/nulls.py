"""A fed column with nulls: ``train`` reads every row once and records the values TF saw.

``x`` is null in every 10th row of 100. Without a fill the feed refuses it before training; with
``--fill x=VALUE`` the nulls arrive as VALUE.
"""
from common import record
from pyspark.sql import functions as F

from elearn import SparkTFJob


class Nulls(SparkTFJob):
    def pre_train(self, spark):
        df = spark.range(100, numPartitions=2)
        x = F.when(F.col("id") % 10 == 0, F.lit(None)).otherwise(F.col("id").cast("float"))
        return df.select(x.alias("x"), F.col("id").cast("float").alias("y"))

    def train(self, ctx):
        seen = []
        for features, _ in ctx.dataset_fn(label="y", batch_size=16, shuffle=False, repeat=False)():
            seen.extend(float(v) for v in features["x"].numpy())
        if ctx.is_chief:
            record(self.args, "out", {"x": sorted(seen)})
