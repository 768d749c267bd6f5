from pyspark.sql import functions as F

from elearn import SparkTFJob


class MapColumn(SparkTFJob):
    def pre_train(self, spark):
        return spark.range(10).withColumn("attrs", F.create_map(F.lit("k"), F.col("id")))

    def train(self, ctx):
        pass
