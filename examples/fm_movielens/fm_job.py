"""MovieLens rating prediction with a factorization machine: Spark features, sharded TF training,
Spark scoring of raw ids. See README.md in this directory.

    pl_submit examples/fm_movielens/fm_job.py --ps 2 --workers 2                    # generated 1M ratings
    pl_submit examples/fm_movielens/fm_job.py --ps 2 --workers 2 --arg data=/data/ml-1m
    pl_submit examples/fm_movielens/fm_job.py --ps 0 --workers 2                    # allreduce mode

Beside the exported model (``<app dir>/model``) the job leaves ``vocab/users.parquet`` and
``vocab/movies.parquet`` (raw id -> index) and ``predictions/`` (a Parquet table of the validation
ratings scored by raw ids).

Job arguments (``--arg KEY=VALUE``): data, scale (100k|1m|10m, generated data), seed, epochs,
batch_size, dim, l2, lr, validation_fraction, shard_kib, als_rank, als_reg, als_iter, outputs (where
the vocabularies and predictions go; default: the model's parent directory), out (a JSON-lines file
the results are appended to).
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fm_model  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
import movielens  # noqa: E402

from elearn import SparkTFJob  # noqa: E402

LABEL = "rating"
# The inputs besides the two ids: what a request carries along with the raw user and movie ids.
CONTEXT = [f for f in movielens.INPUTS if f not in ("user_idx", "movie_idx")]


def default_data(scale: str, seed: int) -> str:
    """Generated MovieLens as Parquet for ``scale``, written once under ``$ELEARN_HOME/data``."""
    from elearn.driver.options import elearn_home

    import generate

    path = os.path.join(elearn_home(), "data", f"movielens-{scale}-seed{seed}-parquet")
    if not os.path.exists(os.path.join(path, "_complete")):
        ratings, movies = generate.generate(scale, seed)
        generate.write(path, ratings, movies, "parquet", seed, half_stars=scale == "10m")
        open(os.path.join(path, "_complete"), "w").close()
    return path


def filesystem(location: str):
    """``(pyarrow filesystem, path)`` of a local path, a ``file://`` mount or a URI (s3://, ...)."""
    import pyarrow.fs

    if "://" not in location:
        return pyarrow.fs.LocalFileSystem(), os.path.abspath(location)
    return pyarrow.fs.FileSystem.from_uri(location)


def save_vocabularies(vocab: dict, folder: str) -> dict[str, str]:
    """Write each ``(<name>_id, <name>_idx)`` table as ``folder/<name>s.parquet``, from the driver:
    they are small (a row per user or movie), and the driver sees the model's location even where
    the executors do not. Returns ``{name: path}``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, base = filesystem(folder)
    fs.create_dir(base, recursive=True)
    paths = {}
    for name, df in vocab.items():
        rows = df.select(f"{name}_id", f"{name}_idx").collect()
        table = pa.table({c: pa.array([r[i] for r in rows], pa.int32())
                          for i, c in enumerate((f"{name}_id", f"{name}_idx"))})
        pq.write_table(table, f"{base}/{name}s.parquet", filesystem=fs)
        paths[name] = f"{folder.rstrip('/')}/{name}s.parquet"
    return paths


def load_vocabulary(spark, path: str, name: str):
    """A saved vocabulary as a DataFrame ``(<name>_id, <name>_idx)``, read on the driver."""
    import pyarrow.parquet as pq

    fs, file = filesystem(path)
    table = pq.read_table(file, filesystem=fs)
    ids, indexes = (table.column(c).to_pylist() for c in (f"{name}_id", f"{name}_idx"))
    return spark.createDataFrame(list(zip(ids, indexes)), f"{name}_id int, {name}_idx int")


def score_raw_ids(spark, requests, model_dir: str, vocabularies: dict[str, str], output_col="prediction"):
    """``requests`` (raw ``user_id``, ``movie_id`` and the context columns) scored by the model:
    the raw ids joined to their indexes through the saved vocabularies, then ``elearn.predict`` on
    the executors. Ids the vocabularies do not hold (never seen in training data) are left out."""
    import elearn
    from pyspark.sql import functions as F

    indexed = requests
    for name, path in vocabularies.items():
        indexed = indexed.join(F.broadcast(load_vocabulary(spark, path, name)), f"{name}_id")
    return elearn.predict(indexed, model_dir, output_col=output_col)


def executors_can_write(spark, location: str) -> bool:
    """Whether Spark's executors see ``location``: any URI (a ``file://`` mount, s3://, hdfs://...),
    or any path when Spark runs in this process (local mode)."""
    master = spark.conf.get("spark.master", "local") or "local"
    return "://" in location or (master.startswith("local") and not master.startswith("local-cluster"))


def write_table(spark, df, location: str) -> str:
    """``df`` as a Parquet directory at ``location``, written by the executors where they can;
    a path on the driver's own disk with a cluster's executors (which cannot see it) is written
    from the driver, the rows passing through it once."""
    if executors_can_write(spark, location):
        df.write.mode("overwrite").parquet(location)
        return location
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = df.toArrow() if hasattr(df, "toArrow") else pa.Table.from_pandas(df.toPandas(), preserve_index=False)
    fs, base = filesystem(location)
    fs.create_dir(base, recursive=True)
    pq.write_table(table, f"{base}/part-00000.parquet", filesystem=fs)
    return location


def shard_placement(model) -> list[dict]:
    """Every variable of ``model`` with the devices of its shards (one entry when not sharded)."""
    out = []
    for v in model.variables:
        shards = getattr(v, "variables", None) or [v]
        out.append({"name": v.name, "shape": [int(d) for d in v.shape],
                    "shards": [{"shape": [int(d) for d in s.shape], "device": getattr(s, "device", "")}
                               for s in shards]})
    return out


class MovieLensFM(SparkTFJob):
    # -- Spark: read, join, features, split ---------------------------------------------------
    def pre_train(self, spark):
        scale, seed = str(self.args.get("scale", "1m")), int(self.args.get("seed", 7))
        data = self.args.get("data") or default_data(scale, seed)
        ratings, movies = movielens.read_movielens(spark, str(data))
        # Raw id -> index tables, kept (small) to be saved with the model in post_train.
        vocab = {k: v.cache() for k, v in movielens.id_vocabularies(ratings).items()}
        features = movielens.mark_validation(movielens.features(ratings, movies, vocab),
                                             float(self.args.get("validation_fraction", 0.1)))
        # Cached once for the feed, ALS and scoring; one partition per core rather than the last
        # shuffle's 200, which would be 200 small tasks for every Spark job that reads it. The raw
        # ids join after the repartition, so they do not change which rows it deals where.
        features = movielens.with_raw_ids(features.repartition(spark.sparkContext.defaultParallelism),
                                          vocab).cache()
        self.vocab, self.mean_rating = movielens.summarize(features)
        self._frames = {"train": features.where(~F.col("is_validation")),
                        "validation": features.where("is_validation"), "vocab": vocab}
        print(f"MovieLens at {data} ({movielens.detect_format(str(data))}): "
              f"{self.vocab['user_idx']} users, {self.vocab['movie_idx']} movies, "
              f"{self.vocab['genre_ids'] - 1} genres; train mean rating {self.mean_rating:.3f}")
        return {"train": self._frames["train"].select(*movielens.INPUTS, LABEL)}

    def __getstate__(self):
        # DataFrames stay on the driver; the TF side needs only the sizes and arguments.
        return {k: v for k, v in self.__dict__.items() if k != "_frames"}

    # -- PS mode: shard the big tables -------------------------------------------------------
    def variable_partitioner(self, num_ps):
        import tensorflow as tf

        # 64 KiB shards (--arg shard_kib=N): the user and movie tables (hundreds of KiB) split
        # over every PS, the small field tables stay whole.
        return tf.distribute.experimental.partitioners.MinSizePartitioner(
            min_shard_bytes=int(float(self.args.get("shard_kib", 64)) * 1024), max_shards=max(1, num_ps))

    # -- TensorFlow ----------------------------------------------------------------------------
    def train(self, ctx):
        keras, a = ctx.keras, self.args
        batch = int(a.get("batch_size", 2048))
        with ctx.strategy.scope():
            model = fm_model.build_fm(keras, self.vocab, dim=int(a.get("dim", 16)),
                                      l2=float(a.get("l2", 2e-5)), mean_rating=self.mean_rating)
            model.compile(optimizer=keras.optimizers.Adam(float(a.get("lr", 0.005))), loss="mse",
                          # Keras 3 under MultiWorkerMirroredStrategy fails with more than one
                          # step per execution; tf_keras in PS mode needs many to keep workers busy.
                          steps_per_execution=int(a.get("steps_per_execution", 25 if ctx.mode == "ps" else 1)))
        placement = shard_placement(model)
        if ctx.is_chief:
            print("model variables and where their shards live:")
            for v in placement:
                where = ", ".join(f"{s['shape'][0] if s['shape'] else 1} rows on {s['device'] or 'local'}"
                                  for s in v["shards"])
                print(f"  {v['name']:<28} {str(v['shape']):<10} {where}")
        # `batch_size` is rows per worker per step. Allreduce averages the workers' batches into
        # one update of batch x workers rows; PS workers update asynchronously, one update per
        # worker batch. A PS step of batch x workers rows makes both modes take the same number
        # of updates of the same size per epoch, so the same lr, l2 and epochs fit both (with
        # 2,048-row PS steps, twice the updates overfit by the 4th epoch).
        step_batch = batch * ctx.num_workers if ctx.mode == "ps" else batch
        data = ctx.dataset(label=LABEL, batch_size=step_batch, features=movielens.INPUTS,
                           seed=int(a.get("seed", 7)))
        epochs = int(a.get("epochs", 4))
        stamps = []         # epoch end times: throughput after the first (warm-up) epoch
        timer = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: stamps.append(time.time()))
        steps = ctx.steps_per_epoch(step_batch)
        # No checkpoint code: elearn checkpoints every fit at the end of each epoch, in both modes,
        # and a restarted train's fit resumes after the last epoch saved.
        history = model.fit(data, epochs=epochs, steps_per_epoch=steps, callbacks=[timer], verbose=0)
        examples = steps * step_batch * (ctx.num_workers if ctx.mode == "allreduce" else 1)
        rate = examples * (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None
        if ctx.is_chief:
            losses = [round(float(x), 4) for x in history.history.get("loss", [])]
            print(f"train loss per epoch: {losses}" + (f"; {rate:,.0f} examples/s after the first epoch" if rate else ""))
            self._record({"event": "train", "mode": ctx.mode, "num_ps": ctx.num_ps,
                          "num_workers": ctx.num_workers, "rows": ctx.rows(), "epochs": epochs,
                          "loss": losses, "examples_per_sec": rate, "placement": placement})
        # In PS mode the tables are sharded; elearn exports them joined, so the SavedModel
        # loads anywhere (elearn.predict on the executors included).
        return model

    # -- Spark again: save the vocabularies, score raw ids, compare with baselines ------------
    def post_train(self, spark, model_dir):
        from pyspark.ml.recommendation import ALS
        from pyspark.sql import functions as F

        train, validation = self._frames["train"], self._frames["validation"]
        a = self.args
        outputs = str(a.get("outputs") or os.path.dirname(model_dir.rstrip("/")))
        vocabularies = save_vocabularies(self._frames["vocab"], f"{outputs}/vocab")
        print(f"vocabularies (raw id -> index) saved: "
              f"{', '.join(vocabularies.values())}")

        # Validation ratings as a serving system would send them: raw ids and the context.
        requests = validation.select("user_id", "movie_id", "timestamp", *CONTEXT, LABEL)
        scored = score_raw_ids(spark, requests, model_dir, vocabularies)
        als = ALS(userCol="user_idx", itemCol="movie_idx", ratingCol=LABEL, rank=int(a.get("als_rank", 10)),
                  regParam=float(a.get("als_reg", 0.1)), maxIter=int(a.get("als_iter", 10)),
                  coldStartStrategy="nan", seed=int(a.get("seed", 7))).fit(train)
        scored = als.setPredictionCol("als").transform(scored)
        # ALS has no factors for a user or movie absent from train: null there.
        table = scored.select("user_id", "movie_id", "timestamp", *CONTEXT, LABEL, "prediction",
                              F.when(~F.isnan("als"), F.col("als")).alias("als")).cache()
        predictions = write_table(spark, table, f"{outputs}/predictions")
        print(f"predictions (validation ratings scored by raw ids) written to {predictions}:")
        for r in table.orderBy("user_id", "movie_id").limit(5).collect():
            print(f"  user {r.user_id:>6} movie {r.movie_id:>6}  rating {r[LABEL]:.1f}  "
                  f"FM {r.prediction:.3f}  ALS {r.als if r.als is None else round(r.als, 3)}")

        mean = F.lit(self.mean_rating)
        # Where ALS has no prediction it falls back to the mean, so all three are judged on every
        # validation rating.
        errors = {"global mean": mean, "Spark ALS": F.coalesce("als", mean), "elearn FM": F.col("prediction")}
        row = table.agg(F.count(F.lit(1)).alias("n"),
                        *[F.sqrt(F.avg((p - F.col(LABEL)) ** 2)).alias(k) for k, p in errors.items()]).first()
        table.unpersist()
        base = row["global mean"]
        print(f"validation RMSE on {row['n']} ratings (latest {float(a.get('validation_fraction', 0.1)):.0%} "
              f"of each user's):")
        print(f"  {'model':<12} {'RMSE':>7} {'vs mean':>8}")
        for k in errors:
            print(f"  {k:<12} {row[k]:7.4f} {row[k] / base - 1:+8.1%}")
        self._record({"event": "evaluation", "n": row["n"], **{k: row[k] for k in errors}})
        self._record({"event": "outputs", "model": model_dir, "vocabularies": vocabularies,
                      "predictions": predictions})

    def _record(self, payload):
        path = self.args.get("out")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(payload) + "\n")
