"""An embedding table and its Adagrad accumulators, sharded over however many PS the run has.

``train`` fits a small tf_keras model (a table of VOCAB ids split over every parameter server, then
a dense layer) for ``epochs`` epochs, then writes every value of the model and the optimizer as
whole arrays (parts joined in order) to ``--arg out=FILE`` (npz). Run again with the same
``--app-name`` and ``--checkpoint-dir`` and the same ``epochs``, ``fit`` resumes at the last epoch
saved, trains nothing, and the values written are what the restore produced: the test compares
them with the first run's, whatever the number of parameter servers.
"""
import re

import numpy as np
import tensorflow as tf
from pyspark.sql import functions as F

from elearn import SparkTFJob

VOCAB, DIM = 3000, 8


def joined(variables) -> dict:
    """{name without part suffix: the whole array}, parts concatenated in order."""
    parts: dict = {}
    for v in variables:
        shards = list(v.variables) if type(v).__name__ == "ShardedVariable" else [v]
        for s in shards:
            name = s.name.split(":")[0]
            part = re.search(r"/part_(\d+)", name)
            parts.setdefault(re.sub(r"/part_\d+", "", name), []).append(
                (int(part.group(1)) if part else 0, np.asarray(s.numpy())))
    return {k: np.concatenate([a for _, a in sorted(p, key=lambda t: t[0])], 0) if p[0][1].ndim
            else p[0][1] for k, p in parts.items()}


class Reshard(SparkTFJob):
    def pre_train(self, spark):
        ids = (F.col("id") * 7919 % VOCAB).alias("id")
        y = ((F.col("id") * 7919 % VOCAB) % 3 - 1).cast("float").alias("y")
        return spark.range(4000, numPartitions=2).select(ids, y)

    def variable_partitioner(self, num_ps):
        # 8 KiB shards: the 96 KB table (and its accumulators) split over every PS.
        return tf.distribute.experimental.partitioners.MinSizePartitioner(
            min_shard_bytes=8 << 10, max_shards=num_ps)

    def train(self, ctx):
        keras = ctx.keras
        with ctx.strategy.scope():
            ids = keras.Input(shape=(), dtype="int64", name="id")
            h = keras.layers.Embedding(VOCAB, DIM, name="table")(ids)
            model = keras.Model({"id": ids}, keras.layers.Dense(1, name="score")(h))
            model.compile(optimizer=keras.optimizers.Adagrad(0.5), loss="mse", steps_per_execution=4)
        model.fit(ctx.dataset(label="y", batch_size=100), epochs=int(self.args["epochs"]),
                  steps_per_epoch=ctx.steps_per_epoch(100), verbose=0)
        table = model.get_layer("table").embeddings
        values = {f"model/{k}": v for k, v in joined(model.variables).items()}
        # Slots made in the first step are named under the optimizer ("Adagrad/accumulator/..."),
        # those made before a restore are not: the checkpoint matches them by structure, not name.
        values.update({f"optimizer/{k.removeprefix('Adagrad/')}": v
                       for k, v in joined(model.optimizer.variables()).items()})
        np.savez(self.args["out"], shards=len(getattr(table, "variables", [table])), **values)
