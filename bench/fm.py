"""MovieLens FM training throughput and Spark scoring throughput, side by side in one run.

    python bench/fm.py [--scale 100k] [--epochs 3] [--batch-size 2048]

Training examples/s of the example's FM (examples/fm_movielens) on the same generated data:
(a) single-process tf_keras with the training rows in memory (tf.data.from_tensor_slices),
(b) elearn --ps 1 --workers 1, (c) elearn --ps 2 --workers 2. Rates are measured after the first
epoch (warm-up) in every case, so start-up, the feed and tracing are not counted. Then scoring
rows/s of elearn.predict with the model (b) exported, against calling that model in-process.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXAMPLE = os.path.join(ROOT, "examples", "fm_movielens")
sys.path.insert(0, EXAMPLE)


def features_parquet(data: str, out: str) -> None:
    """The example's own Spark features, written once so (a) reads exactly what (b) and (c) train on."""
    import movielens
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.pyspark.python", sys.executable).getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    ratings, movies = movielens.read_movielens(spark, data)
    marked = movielens.mark_validation(movielens.features(ratings, movies))
    marked.write.mode("overwrite").parquet(out)
    spark.stop()


def in_memory(parquet: str, epochs: int, batch: int) -> dict:
    import numpy as np
    import pandas as pd
    import tensorflow as tf
    import tf_keras

    import fm_model
    import movielens

    df = pd.read_parquet(parquet)
    vocab = {f: int(max(df[f].max() if f != "genre_ids" else max(max(g) for g in df[f]), 0)) + 1
             for f in movielens.INPUTS}
    train = df[~df.is_validation]
    x = {f: train[f].to_numpy(np.int32) for f in movielens.INPUTS if f != "genre_ids"}
    width = max(len(g) for g in train.genre_ids)
    x["genre_ids"] = np.array([list(g) + [0] * (width - len(g)) for g in train.genre_ids], np.int32)
    y = train.rating.to_numpy(np.float32)
    model = fm_model.build_fm(tf_keras, vocab, mean_rating=float(y.mean()))
    model.compile(tf_keras.optimizers.Adam(0.005), "mse", steps_per_execution=25)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=7).batch(batch).prefetch(4)
    stamps = []
    cb = tf_keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: stamps.append(time.time()))
    model.fit(ds, epochs=epochs, callbacks=[cb], verbose=0)
    steps = -(-len(y) // batch)
    rate = steps * batch * (len(stamps) - 1) / (stamps[-1] - stamps[0])
    # Scoring in-process, for scale against Spark scoring below.
    t = time.time()
    model.predict(x, batch_size=8192, verbose=0)
    return {"train": rate, "score_inprocess": len(y) / (time.time() - t), "rows": len(y)}


def elearn_run(data: str, ps: int, workers: int, epochs: int, batch: int, work: str) -> dict:
    out = os.path.join(work, f"ps{ps}-w{workers}.jsonl")
    cmd = [sys.executable, "-m", "plsubmit.cli", os.path.join(EXAMPLE, "fm_job.py"), "--ps", str(ps),
           "--workers", str(workers), "--register-timeout", "1800", "--work-dir", work,
           "--arg", f"data={data}", "--arg", f"epochs={epochs}", "--arg", f"batch_size={batch}",
           "--arg", f"out={out}", "--arg", "als_iter=1", "--quiet"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=7200,
                          env={**os.environ, "PYTHONPATH": ROOT})
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    with open(out) as f:
        events = {e["event"]: e for e in map(json.loads, f)}
    apps = sorted(d for d in os.listdir(work) if os.path.isdir(os.path.join(work, d, "model")))
    return {"train": events["train"]["examples_per_sec"], "model": os.path.join(work, apps[-1], "model")}


def spark_scoring(parquet: str, model_dir: str) -> float:
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    import elearn

    os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.pyspark.python", sys.executable).getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    df = spark.read.parquet(parquet).cache()
    n = df.count()
    elearn.predict(df.limit(1000), model_dir).agg(F.sum("prediction")).first()   # load the model
    t = time.time()
    elearn.predict(df, model_dir).agg(F.sum("prediction")).first()
    rate = n / (time.time() - t)
    spark.stop()
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", default="100k", choices=["100k", "1m", "10m"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=2048)
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import fm_job

    load_start = os.getloadavg()
    data = fm_job.default_data(args.scale, 7)
    work = tempfile.mkdtemp(prefix="elearn-bench-fm-")
    parquet = os.path.join(work, "features.parquet")
    features_parquet(data, parquet)
    a = in_memory(parquet, args.epochs, args.batch_size)
    b = elearn_run(data, 1, 1, args.epochs, args.batch_size, os.path.join(work, "b"))
    c = elearn_run(data, 2, 2, args.epochs, args.batch_size, os.path.join(work, "c"))
    score = spark_scoring(parquet, b["model"])
    print(f"\nMovieLens FM, generated {args.scale} ({a['rows']:,} training rows), batch {args.batch_size}, "
          f"{args.epochs} epochs (first one not timed)")
    print(f"{'':<44} {'rate':>14} {'vs (a)':>7}")
    for name, rate in (("(a) single-process TF, data in memory", a["train"]),
                       ("(b) elearn --ps 1 --workers 1", b["train"]),
                       ("(c) elearn --ps 2 --workers 2", c["train"])):
        print(f"{name:<44} {rate:>10,.0f} ex/s {rate / a['train']:>6.2f}x")
    print(f"(c) takes steps of batch x 2 rows (the example's PS steps match allreduce's updates)")
    print(f"load average (1, 5, 15 min) at start {load_start}, at end {os.getloadavg()}")
    print(f"{'elearn.predict on local[2]':<44} {score:>10,.0f} row/s {score / a['score_inprocess']:>6.2f}x"
          f"  (vs in-process Keras predict, {a['score_inprocess']:,.0f} row/s)")


if __name__ == "__main__":
    main()
