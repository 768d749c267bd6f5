"""train raises after the cluster formed."""
from common import linear_frame, record

from elearn import SparkTFJob


class Raises(SparkTFJob):
    def pre_train(self, spark):
        return linear_frame(spark, rows=1000)

    def train(self, ctx):
        raise ValueError("boom from train")

    def shutdown(self):
        record(self.args, "marker", {"shutdown": True})
