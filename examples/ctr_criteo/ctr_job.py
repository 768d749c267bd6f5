"""Click-through-rate prediction on Criteo-format logs: Spark features, a DeepFM whose hashed
embedding tables are sharded over the parameter servers, Spark scoring of raw rows. See README.md
in this directory.

    pl_submit examples/ctr_criteo/ctr_job.py --ps 2 --workers 2                    # generated data
    pl_submit examples/ctr_criteo/ctr_job.py --ps 0 --workers 2                    # allreduce mode
    pl_submit examples/ctr_criteo/ctr_job.py --ps 2 --workers 2 --arg data=/data/criteo

Job arguments (``--arg KEY=VALUE``): data (a directory of day files or one file; default:
generated), scale (tiny|small|large, generated data), seed, epochs, batch_size, dim, lr,
buckets_scale, min_count, validation_fraction (one-file data), steps_per_execution, show (validation
rows to print scored), out (a JSON-lines file the results are appended to).
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import criteo  # noqa: E402
import ctr_model  # noqa: E402

from elearn import SparkTFJob  # noqa: E402


def default_data(scale: str, seed: int) -> str:
    """Generated day files for ``scale``, written once under ``$ELEARN_HOME/data``."""
    from elearn.driver.options import elearn_home

    import generate

    path = os.path.join(elearn_home(), "data", f"criteo-{scale}-seed{seed}")
    if not os.path.exists(os.path.join(path, "_complete")):
        print(f"generating the {scale} data set ({generate.SCALES[scale]:,} rows) into {path}, once")
        generate.generate(path, scale, seed)
        open(os.path.join(path, "_complete"), "w").close()
    return path


def read_teacher(data: str, held_out: str | None) -> dict | None:
    """The generator's teacher.json when ``data`` is a generated directory whose held-out day is
    the validation set the job uses (real Criteo data has none)."""
    path = os.path.join(data, "teacher.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        teacher = json.load(f)
    return teacher if held_out and teacher.get("validation_file") == os.path.basename(held_out) else None


def shard_placement(model) -> list[dict]:
    """Every variable of ``model`` with the devices of its shards (one entry when not sharded)."""
    out = []
    for v in model.variables:
        shards = getattr(v, "variables", None) or [v]
        out.append({"name": v.name, "shape": [int(d) for d in v.shape],
                    "shards": [{"shape": [int(d) for d in s.shape], "device": getattr(s, "device", "")}
                               for s in shards]})
    return out


class CriteoCTR(SparkTFJob):
    # -- Spark: read, split, threshold, features -------------------------------------------------
    def pre_train(self, spark):
        a = self.args
        scale, seed = str(a.get("scale", "small")), int(a.get("seed", 7))
        data = str(a.get("data") or default_data(scale, seed))
        fraction = float(a.get("validation_fraction", 0.1))
        train_raw, validation_raw, held_out, how = criteo.split(spark, data, fraction, seed)
        self.teacher = read_teacher(data, held_out)

        cleaned = criteo.clean(train_raw)
        # The frequent values are read by the 26 broadcast joins of the train features and again
        # of the validation features: computed once and kept in one partition (each broadcast
        # collects the whole set anyway; the aggregation's 200 partitions would be 200 tasks per join).
        frequent = criteo.frequent_values(cleaned, int(a.get("min_count", 10))).coalesce(1).cache()
        self.vocab = criteo.vocabulary_sizes(frequent)
        self.stats = criteo.train_stats(cleaned)
        self._frames = {"frequent": frequent, "validation": criteo.features(validation_raw, frequent)}
        print(f"Criteo data at {data}: {how}; {self.stats['rows']:,} training rows, click rate "
              f"{self.stats['click_rate']:.3f}")
        print(f"values seen at least {a.get('min_count', 10)} times (the rest of each field is "
              f"{criteo.RARE}): " + ", ".join(f"{c} {n:,}" for c, n in self.vocab.items()))
        return {"train": criteo.features(train_raw, frequent)}

    def __getstate__(self):
        # DataFrames stay on the driver; the TF side needs only the statistics and arguments.
        return {k: v for k, v in self.__dict__.items() if k != "_frames"}

    # -- TensorFlow --------------------------------------------------------------------------------
    def train(self, ctx):
        # tf_keras in both modes: ParameterServerStrategy trains only tf_keras, and under
        # MultiWorkerMirroredStrategy (allreduce) tf_keras's legacy Adagrad updates only the rows a
        # batch looked up, where Keras 3's Adagrad rewrites the whole table every step and tf_keras's
        # current one reads its whole accumulator (2.1x the legacy one's CPU per example on the
        # benchmark DeepFM: bench/README.md). elearn.FieldEmbeddings looks up the worker's own copy.
        import tf_keras as keras

        a = self.args
        batch, epochs = int(a.get("batch_size", 1024)), int(a.get("epochs", 2))
        field_buckets = ctr_model.buckets(float(a.get("buckets_scale", 1.0)))
        lr = float(a.get("lr", 0.1))
        with ctx.strategy.scope():
            model = ctr_model.build_deepfm(keras, field_buckets, self.stats["count_mean"],
                                           self.stats["count_std"], dim=int(a.get("dim", 16)))
            # Adagrad updates only the table rows a batch looked up (Adam would rewrite all 20M
            # rows of each table every step). steps_per_execution packs steps into one call in PS
            # mode; in allreduce mode, with two workers or more, TensorFlow's all-gather of sparse
            # gradients fails inside a call of several steps (docs/allreduce.md): one step per call.
            optimizer = keras.optimizers.Adagrad(lr) if ctx.mode == "ps" else keras.optimizers.legacy.Adagrad(lr)
            model.compile(optimizer=optimizer, loss="binary_crossentropy",
                          steps_per_execution=int(a.get("steps_per_execution", 25 if ctx.mode == "ps" else 1)))
        if ctx.is_chief:
            ids = sum(field_buckets.values())
            print(f"DeepFM: {len(ctr_model.FIELDS)} hashed fields, {ids:,} ids per table "
                  f"(embedding dim {a.get('dim', 16)} + a first-order weight); variables and their shards:")
            for v in shard_placement(model):
                where = ", ".join(f"{s['shape'][0] if s['shape'] else 1} rows on {s['device'] or 'local'}"
                                  for s in v["shards"])
                print(f"  {v['name']:<34} {str(v['shape']):<14} {where}")
        # `batch_size` is rows per worker per step. Allreduce averages the workers' batches into
        # one update of batch x workers rows; a PS worker's batch is an update of its own. PS steps
        # of batch x workers rows make both modes take the same number of updates of the same
        # size per epoch, so one learning rate fits both (as in examples/fm_movielens).
        step_batch = batch * ctx.num_workers if ctx.mode == "ps" else batch
        data = ctx.dataset(label=criteo.LABEL, features=criteo.FEATURES, batch_size=step_batch,
                           seed=int(a.get("seed", 7)))
        history = model.fit(data, epochs=epochs, steps_per_epoch=ctx.steps_per_epoch(step_batch), verbose=0)
        if ctx.is_chief:
            print(f"train loss per epoch: {[round(float(x), 4) for x in history.history.get('loss', [])]}")
        # In PS mode the tables are sharded; elearn exports them joined, so the SavedModel loads
        # anywhere (elearn.predict on the executors included).
        return model

    # -- Spark again: score the validation day's raw rows with the exported model ---------------
    def post_train(self, spark, model_dir):
        from pyspark.ml.evaluation import BinaryClassificationEvaluator
        from pyspark.sql import functions as F

        import elearn

        # Raw log lines in, click probabilities out: the validation day through the same Spark
        # features as training, then the exported model on the executors, which hashes the
        # strings itself. Cached: the metrics and the rows shown below read it.
        scored = elearn.predict(self._frames["validation"], model_dir, output_col="ctr").cache()
        label, p = F.col(criteo.LABEL), F.least(F.greatest(F.col("ctr"), F.lit(1e-7)), F.lit(1 - 1e-7))
        rate = self.stats["click_rate"]
        row = scored.agg(F.count(F.lit(1)).alias("n"), F.avg(label).alias("clicks"),
                         F.avg(-(label * F.log(p) + (1 - label) * F.log(1 - p))).alias("logloss"),
                         F.avg(-(label * F.log(F.lit(rate)) + (1 - label) * F.log(F.lit(1 - rate))))
                         .alias("constant")).first()
        auc = BinaryClassificationEvaluator(rawPredictionCol="ctr", labelCol=criteo.LABEL, numBins=0).evaluate(scored)
        t = self.teacher or {}
        print(f"validation on {row['n']:,} rows (click rate {row['clicks']:.3f}):")
        print(f"  {'model':<36} {'AUC':>7} {'logloss':>8}")
        print(f"  {'constant (train click rate)':<36} {0.5:7.4f} {row['constant']:8.4f}")
        print(f"  {'elearn DeepFM':<36} {auc:7.4f} {row['logloss']:8.4f}")
        if t:
            print(f"  {'teacher (the true click probability)':<36} {t['teacher_auc']:7.4f} {t['teacher_logloss']:8.4f}")
            print(f"  the DeepFM's AUC is {(auc - 0.5) / (t['teacher_auc'] - 0.5):.0%} of the teacher's "
                  "distance above chance")
        rows = [{"label": r[criteo.LABEL], "C3": r["C3"], "C6": r["C6"], "C17": r["C17"],
                 "tags": [x for x in r[criteo.TAGS] if x], "ctr": r["ctr"]}
                for r in scored.limit(int(self.args.get("show", 5))).collect()]
        scored.unpersist()
        print("validation rows scored by the exported model:")
        for r in rows:
            print(f"  label {r['label']:.0f}  C3 {r['C3']:<11} C6 {r['C6']:<11} C17 {r['C17']:<11} "
                  f"tags {','.join(r['tags']) or '-':<14} -> ctr {r['ctr']:.3f}")
        self._record({"event": "evaluation", "n": row["n"], "auc": auc, "logloss": row["logloss"],
                      "constant_logloss": row["constant"], "click_rate": row["clicks"],
                      "train_rows": self.stats["rows"], "vocabulary": self.vocab,
                      "teacher_auc": t.get("teacher_auc"), "teacher_logloss": t.get("teacher_logloss")})
        self._record({"event": "scored", "rows": rows})

    def _record(self, payload):
        path = self.args.get("out")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(payload) + "\n")
