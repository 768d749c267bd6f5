"""Feature engineering that would run for minutes (for killing an application during pre_train).

With ``--arg ui=PORT`` (the driver's ``spark.ui.port``), when its action fails it records, to
``jobs``, the status of every Spark job as the driver's REST API tells it, while the application
still runs: the proof of what a kill did to them.
"""
import json
import time
import urllib.request

from common import record
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType

from elearn import SparkTFJob


@F.udf(DoubleType())
def slow_feature(x):
    time.sleep(0.2)
    return float(x)


def spark_jobs(port: int, settle: float = 30.0) -> list:
    """``[{"id", "status"}]`` of the driver's jobs, once none is RUNNING any more (the status
    store follows the scheduler by a moment), or as they are after ``settle`` seconds."""
    base = f"http://127.0.0.1:{port}/api/v1/applications"
    deadline = time.monotonic() + settle
    while True:
        with urllib.request.urlopen(base, timeout=30) as r:
            (app,) = json.load(r)
        with urllib.request.urlopen(f"{base}/{app['id']}/jobs", timeout=30) as r:
            jobs = [{"id": j["jobId"], "status": j["status"]} for j in json.load(r)]
        if not any(j["status"] == "RUNNING" for j in jobs) or time.monotonic() > deadline:
            return jobs
        time.sleep(0.2)


class SlowPreTrain(SparkTFJob):
    def pre_train(self, spark):
        record(self.args, "started", {"started": True})
        df = spark.range(1000, numPartitions=2).select(slow_feature("id").alias("x"))
        try:
            df.cache().count()  # 100 s of work per core
        except Exception:
            if self.args.get("ui"):
                record(self.args, "jobs", {"jobs": spark_jobs(int(self.args["ui"]))})
            raise
        return df

    def train(self, ctx):
        record(self.args, "trained", {"trained": True})

    def shutdown(self):
        record(self.args, "marker", {"shutdown": True})
