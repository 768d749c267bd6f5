"""MovieLens rating prediction with a factorization machine: Spark features, sharded TF training,
Spark scoring. See README.md in this directory.

    pl_submit examples/fm_movielens/fm_job.py --ps 2 --workers 2                    # generated 1M ratings
    pl_submit examples/fm_movielens/fm_job.py --ps 2 --workers 2 --arg data=/data/ml-1m
    pl_submit examples/fm_movielens/fm_job.py --ps 0 --workers 2                    # allreduce mode

Job arguments (``--arg KEY=VALUE``): data, scale (100k|1m|10m, generated data), seed, epochs,
batch_size, dim, l2, lr, validation_fraction, shard_kib, als_rank, als_reg, als_iter, out (a JSON-lines file
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


def default_data(scale: str, seed: int) -> str:
    """Generated MovieLens files for ``scale``, written once under ``$ELEARN_HOME/data``."""
    from elearn.driver.options import elearn_home

    import generate

    path = os.path.join(elearn_home(), "data", f"movielens-{scale}-seed{seed}")
    if not os.path.exists(os.path.join(path, "_complete")):
        ratings, movies = generate.generate(scale, seed)
        generate.write(path, ratings, movies, generate.DEFAULT_FORMAT[scale], seed)
        open(os.path.join(path, "_complete"), "w").close()
    return path


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
        features = movielens.mark_validation(movielens.features(ratings, movies),
                                             float(self.args.get("validation_fraction", 0.1)))
        # Cached once for the feed, ALS and scoring; one partition per core rather than the last
        # shuffle's 200, which would be 200 small tasks for every Spark job that reads it.
        features = features.repartition(spark.sparkContext.defaultParallelism).cache()
        self.vocab, self.mean_rating = movielens.summarize(features)
        self._frames = {"train": features.where(~F.col("is_validation")),
                        "validation": features.where("is_validation")}
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
        if ctx.mode == "ps":
            # One checkpoint per epoch; a restarted coordinator resumes after the last one.
            ckpt = ctx.checkpoint(model=model, every_steps=1)
            saver = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: ckpt.save(epoch + 1))
            callbacks, first = [saver], ckpt.step
        else:
            callbacks, first = [ctx.backup_callback(keras)], 0
        stamps = []         # epoch end times: throughput after the first (warm-up) epoch
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: stamps.append(time.time())))
        steps = ctx.steps_per_epoch(step_batch)
        history = model.fit(data, epochs=epochs, initial_epoch=first, steps_per_epoch=steps,
                            callbacks=callbacks, verbose=0)
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

    # -- Spark again: score validation with the exported model, compare with baselines --------
    def post_train(self, spark, model_dir):
        from pyspark.ml.recommendation import ALS
        from pyspark.sql import functions as F

        import elearn

        train, validation = self._frames["train"], self._frames["validation"]
        a = self.args
        als = ALS(userCol="user_idx", itemCol="movie_idx", ratingCol=LABEL, rank=int(a.get("als_rank", 10)),
                  regParam=float(a.get("als_reg", 0.1)), maxIter=int(a.get("als_iter", 10)),
                  coldStartStrategy="nan", seed=int(a.get("seed", 7))).fit(train)
        scored = elearn.predict(validation, model_dir, output_col="fm")
        scored = als.setPredictionCol("als").transform(scored)
        mean = F.lit(self.mean_rating)
        # ALS has no factors for a user or movie absent from train: it falls back to the mean there,
        # so all three are judged on every validation rating.
        errors = {"global mean": mean, "Spark ALS": F.coalesce(F.nanvl("als", mean), mean),
                  "elearn FM": F.col("fm")}
        row = scored.agg(F.count(F.lit(1)).alias("n"),
                         *[F.sqrt(F.avg((p - F.col(LABEL)) ** 2)).alias(k) for k, p in errors.items()]).first()
        base = row["global mean"]
        print(f"validation RMSE on {row['n']} ratings (latest {float(a.get('validation_fraction', 0.1)):.0%} "
              f"of each user's):")
        print(f"  {'model':<12} {'RMSE':>7} {'vs mean':>8}")
        for k in errors:
            print(f"  {k:<12} {row[k]:7.4f} {row[k] / base - 1:+8.1%}")
        self._record({"event": "evaluation", "n": row["n"], **{k: row[k] for k in errors}})

    def _record(self, payload):
        path = self.args.get("out")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(payload) + "\n")
