"""Feature engineering that takes longer than --register-timeout: not a registration failure."""
import time

from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType
from common import record

from elearn import SparkTFJob


@F.udf(DoubleType())
def slow_feature(x):
    time.sleep(0.05)
    return float(x) * 2.0


class SlowFeatures(SparkTFJob):
    def pre_train(self, spark):
        return spark.range(400, numPartitions=2).select(slow_feature("id").alias("x"))

    def train(self, ctx):
        record(self.args, "out", {"rows": ctx.rows()})
