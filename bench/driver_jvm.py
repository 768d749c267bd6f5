"""The driver JVM's start-up flags: CPU to start Spark, and ETL throughput, side by side.

    python bench/driver_jvm.py [--rounds 2] [--rows 30000000]

Variants: (a) Spark's defaults; (b) elearn's later C2 thresholds (``session.DRIVER_JIT_FLAGS``);
(c) (b) plus the class-data archive (``jvmcache.py``). For each: wall time and machine-wide busy
CPU seconds to start a local[2] SparkSession and run one small job; then, in the same JVM, a
groupBy/countDistinct over ``--rows`` generated rows (ETL throughput must not suffer for faster
starts). Rounds interleave the variants; the best round of each is shown.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

RUN = r"""
import json, sys, time
def busy():
    f = list(map(int, open("/proc/stat").readline().split()[1:]))
    return (sum(f) - f[3] - f[4]) / 100.0
t0, c0 = time.time(), busy()
from pyspark.sql import SparkSession, functions as F
spark = (SparkSession.builder.master("local[2]").config("spark.ui.showConsoleProgress", "false")
         .config("spark.driver.extraJavaOptions", sys.argv[1]).getOrCreate())
spark.range(20000, numPartitions=4).selectExpr("rand(1) as x").repartition(2).count()
start = {"start_s": time.time() - t0, "start_cpu_s": busy() - c0}
df = spark.range(int(sys.argv[2])).select((F.col("id") % 1000).alias("k"), F.rand(1).alias("v"),
                                         F.sha1(F.col("id").cast("string")).alias("h"))
t1 = time.time()
df.groupBy("k").agg(F.sum("v"), F.countDistinct(F.substring("h", 1, 3))).collect()
start["etl_s"] = time.time() - t1
spark.stop()
print("RESULT " + json.dumps(start))
"""


def run(opts: str, rows: int) -> dict:
    out = subprocess.run([sys.executable, "-c", RUN, opts, str(rows)], capture_output=True, text=True,
                         timeout=1800)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])


def main():
    from elearn.driver.session import DRIVER_JIT_FLAGS

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=30_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = os.path.join(tmp, "bench.jsa")
        run(f"{DRIVER_JIT_FLAGS} -XX:ArchiveClassesAtExit={archive}", 1000)  # writes the archive
        variants = {"(a) Spark defaults": "",
                    "(b) later C2": DRIVER_JIT_FLAGS,
                    "(c) later C2 + class-data archive": f"{DRIVER_JIT_FLAGS} -XX:SharedArchiveFile={archive}"}
        best: dict = {}
        for r in range(args.rounds):
            for name, opts in variants.items():
                res = run(opts, args.rows)
                print(f"round {r + 1} {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in res.items()),
                      flush=True)
                for k, v in res.items():
                    best.setdefault(name, {})[k] = min(v, best.get(name, {}).get(k, float("inf")))
    base = best["(a) Spark defaults"]
    print(f"\n| variant | start s | start CPU s | CPU vs (a) | ETL s | ETL vs (a) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, b in best.items():
        print(f"| {name} | {b['start_s']:.1f} | {b['start_cpu_s']:.1f} | "
              f"{b['start_cpu_s'] / base['start_cpu_s']:.2f} | {b['etl_s']:.1f} | "
              f"{b['etl_s'] / base['etl_s']:.2f} |")


if __name__ == "__main__":
    main()
