"""Records, while the cluster runs, which executors run the PS and worker tasks and their shapes.

Observed through the driver's REST API (``--arg ui=PORT`` is ``spark.ui.port``): running jobs by
elearn's job tag, their tasks' executors, and those executors' cores, memory and profile.
``pre_train`` joins and aggregates (shuffles before the feed's own), as a real feature job does.
"""
import json
import urllib.request

from common import linear_frame, record
from pyspark.sql import functions as F

from elearn import SparkTFJob


def _get(base, path):
    with urllib.request.urlopen(base + path, timeout=30) as r:
        return json.load(r)


class Shapes(SparkTFJob):
    def pre_train(self, spark):
        df = linear_frame(spark, rows=4000, partitions=4).withColumn("k", (F.rand(seed=5) * 10).cast("int"))
        means = df.groupBy("k").agg(F.avg("y").alias("y_mean"))
        joined = df.join(means.hint("merge"), "k")     # a sort-merge join: both sides shuffle
        return joined.withColumn("y", F.col("y") + 0 * F.col("y_mean")).drop("k", "y_mean")

    def train(self, ctx):
        base = f"http://127.0.0.1:{self.args['ui']}/api/v1/applications"
        (app,) = _get(base, "")
        base += "/" + app["id"]
        roles = {}
        for jobinfo in _get(base, "/jobs?status=running"):
            role = jobinfo.get("jobGroup", "").rsplit("-", 1)[-1]
            for sid in jobinfo["stageIds"]:
                for stage in _get(base, f"/stages/{sid}"):
                    if stage["status"] != "ACTIVE":
                        continue
                    tasks = _get(base, f"/stages/{sid}/{stage['attemptId']}/taskList?length=100")
                    roles.setdefault(role, []).extend(
                        t["executorId"] for t in tasks if t["status"] == "RUNNING")
        executors = {e["id"]: {"cores": e["totalCores"], "max_memory": e["maxMemory"],
                               "profile": e["resourceProfileId"], "host": e["hostPort"].rsplit(":", 1)[0]}
                     for e in _get(base, "/allexecutors") if e["id"] != "driver"}
        record(self.args, "out", {"roles": roles, "executors": executors})
        return None
