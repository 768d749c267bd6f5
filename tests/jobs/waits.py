"""train says it started, then trains until it is interrupted (for signal tests)."""
import time

from common import linear_frame, record

from elearn import SparkTFJob


class Waits(SparkTFJob):
    def pre_train(self, spark):
        return linear_frame(spark, rows=1000)

    def train(self, ctx):
        record(self.args, "started", {"started": True})
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            time.sleep(0.1)

    def shutdown(self):
        record(self.args, "marker", {"shutdown": True})
