"""Feed memory: peak RSS of a worker task spooling its partition, and of the driver, at two sizes.

Each size runs in a fresh process with its own local Spark application (no cached data, rows made
on the fly by Spark), feeding 8 float32 columns, an int64 id and a float label to 2 workers
through the same plan and ``spool_partition`` the worker job uses. Reported per size:

- worker: the Python worker process's peak RSS (VmHWM) while it streamed its partition to the
  spool, and how much it grew over its RSS before the first batch;
- driver: the driver's Python process peak RSS (where ``pre_train``, the feed plan and the
  coordinator live), and its JVM's. In ``local`` mode that JVM also hosts the executors; with
  ``--master local-cluster[N,C,MB]`` the executors are JVMs of their own and the driver JVM is
  measured alone.

    /work/venv/bin/python bench/feed_memory.py --sizes 500000 5000000
    /work/venv/bin/python bench/feed_memory.py --sizes 500000 5000000 --master "local-cluster[2,1,1024]"
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile


def _status(pid="self") -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def one(rows: int, workers: int, master: str) -> dict:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    import psutil
    import pyarrow as pa
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from elearn.feed.plan import plan_feed
    from elearn.feed.partition import spool_partition

    if master.startswith("local-cluster"):
        import pyspark  # executors are launched from SPARK_HOME: the pip package's own directory

        os.environ.setdefault("SPARK_HOME", os.path.dirname(pyspark.__file__))
    spark = (SparkSession.builder.master(master).appName("elearn-feed-memory")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.execution.arrow.maxRecordsPerBatch", "65536")
             .config("spark.pyspark.python", sys.executable).getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    df = spark.range(rows, numPartitions=4)
    for i in range(8):
        df = df.withColumn(f"f{i}", F.rand(seed=i).cast("float"))
    df = df.withColumn("label", F.rand(seed=99).cast("float"))
    frame, plan = plan_feed({"train": df}, workers)
    root = tempfile.mkdtemp(prefix="elearn-mem-")

    def task(batches):
        import shutil

        from pyspark import TaskContext

        before = _status()["VmRSS"]
        index = TaskContext.get().partitionId()
        metas = spool_partition(batches, plan, root, index)
        peak = _status()["VmHWM"]
        shutil.rmtree(metas["train"]["dir"], ignore_errors=True)
        yield pa.RecordBatch.from_pydict({"stats": [json.dumps(
            {"rows": metas["train"]["rows"], "before": before, "peak": peak})]})

    stats = [json.loads(r.stats) for r in frame.mapInArrow(task, "stats string").collect()]
    from pyspark import SparkContext

    jvm = psutil.Process(SparkContext._gateway.proc.pid)  # the driver's own JVM (py4j gateway)
    executors = [p for p in jvm.children(recursive=True) if "java" in p.name()]
    executor_peak = max((_status(p.pid)["VmHWM"] for p in executors), default=None)
    result = {"rows": rows, "worker_rows": [s["rows"] for s in stats],
              "worker_peak": max(s["peak"] for s in stats),
              "worker_growth": max(s["peak"] - s["before"] for s in stats),
              "driver_peak": _status()["VmHWM"],
              "jvm_peak": _status(jvm.pid)["VmHWM"], "executor_jvm_peak": executor_peak}
    spark.stop()
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[500_000, 5_000_000])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--master", default=None, help="default local[WORKERS]")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    master = a.master or f"local[{a.workers}]"
    if a.one:
        print("RESULT " + json.dumps(one(a.one, a.workers, master)), flush=True)
        return
    results = []
    for rows in a.sizes:
        proc = subprocess.run([sys.executable, __file__, "--one", str(rows), "--workers", str(a.workers),
                               "--master", master], capture_output=True, text=True, timeout=3600)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if not line:
            sys.exit(f"size {rows} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(line[0][7:]))
        print(f"{rows:,} rows done", flush=True)
    mib = 1 << 20
    print()
    separate = master.startswith("local-cluster")
    jvm_title = "driver JVM peak RSS" if separate else "JVM peak RSS (driver + local executors)"
    print(f"--master {master}\n")
    print("| rows | rows per worker | worker peak RSS | worker growth while spooling | "
          f"driver Python peak RSS | {jvm_title} |" + (" executor JVM peak RSS |" if separate else ""))
    print("|---:|---:|---:|---:|---:|---:|" + ("---:|" if separate else ""))
    for r in results:
        print(f"| {r['rows']:,} | {max(r['worker_rows']):,} | {r['worker_peak'] / mib:,.0f} MiB | "
              f"{r['worker_growth'] / mib:,.0f} MiB | {r['driver_peak'] / mib:,.0f} MiB | "
              f"{r['jvm_peak'] / mib:,.0f} MiB |"
              + (f" {r['executor_jvm_peak'] / mib:,.0f} MiB |" if separate and r["executor_jvm_peak"] else ""))
    small, large = results[0], results[-1]
    print()
    print(f"data x{large['rows'] / small['rows']:.0f}: worker peak x"
          f"{large['worker_peak'] / small['worker_peak']:.2f}, driver Python peak x"
          f"{large['driver_peak'] / small['driver_peak']:.2f}, driver JVM peak x"
          f"{large['jvm_peak'] / small['jvm_peak']:.2f}")


if __name__ == "__main__":
    main()
