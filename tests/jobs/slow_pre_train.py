"""Feature engineering that would run for minutes (for killing an application during pre_train)."""
import time

from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType
from common import record

from elearn import SparkTFJob


@F.udf(DoubleType())
def slow_feature(x):
    time.sleep(0.2)
    return float(x)


class SlowPreTrain(SparkTFJob):
    def pre_train(self, spark):
        record(self.args, "started", {"started": True})
        df = spark.range(1000, numPartitions=2).select(slow_feature("id").alias("x"))
        df.cache().count()  # 100 s of work per core
        return df

    def train(self, ctx):
        record(self.args, "trained", {"trained": True})

    def shutdown(self):
        record(self.args, "marker", {"shutdown": True})
