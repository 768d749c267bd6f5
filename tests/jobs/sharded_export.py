"""PS mode with a variable_partitioner: an embedding table split over two parameter servers.

``train`` fits a small tf_keras model (per-id vector and bias tables kept in a dict by a custom
layer, then a dense layer over them and ``x``), records where every variable part lives and the
model's predictions for fixed inputs, and returns the model for export. It also exports a
``tf.Module`` whose tables are sharded the same way (with ``elearn.train.export.export_model``, to
``--arg module_dir=...``) and a subclassed tf_keras model (to ``--arg subclassed_dir=...``), and
records their predictions, so the test can load every SavedModel in a process without any strategy
and compare. These are shapes TensorFlow's own export of sharded variables gets wrong: the model
with the dict-keeping layer fails to load, a ``tf.gather`` on a sharded table loads but returns
other values for the rows of the second part.
"""
import tensorflow as tf
from common import record
from pyspark.sql import functions as F

from elearn import SparkTFJob
from elearn.train.export import export_model

VOCAB, DIM = 1000, 8
PROBE_IDS = [0, 1, 499, 500, 501, 998, 999]        # both sides of the split between the parts
PROBE_X = [0.5, -1.0, 2.0, 0.0, -0.25, 1.5, 3.0]


def placement(variables):
    return [{"name": v.name, "shape": v.shape.as_list(), "device": v.device} for v in variables]


class ShardedExport(SparkTFJob):
    def pre_train(self, spark):
        df = spark.range(2000, numPartitions=1).select((F.col("id") % VOCAB).alias("id"))
        x = (F.rand(seed=3) * 2 - 1).cast("float")
        y = (F.col("x") * 2.0 + F.when(F.col("id") < VOCAB // 2, 1.0).otherwise(-1.0)).cast("float")
        return df.withColumn("x", x).withColumn("y", y)

    def variable_partitioner(self, num_ps):
        # 2 KiB shards: both tables (32 KB, 4 KB) split over every PS, the dense weights stay whole.
        return tf.distribute.experimental.partitioners.MinSizePartitioner(
            min_shard_bytes=2 << 10, max_shards=num_ps)

    def train(self, ctx):
        keras = ctx.keras
        with ctx.strategy.scope():
            ids = keras.Input(shape=(), dtype="int64", name="id")
            x = keras.Input(shape=(), dtype="float32", name="x")
            h = keras.layers.Concatenate()([IdTables(keras, name="tables")(ids),
                                            keras.layers.Reshape((1,))(x)])
            model = keras.Model({"id": ids, "x": x}, keras.layers.Dense(1, name="score")(h))
            model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse", steps_per_execution=8)
            module = TwoTables()
        history = model.fit(ctx.dataset(label="y", batch_size=64), epochs=2,
                            steps_per_epoch=ctx.steps_per_epoch(64), verbose=0)
        probe = {"id": tf.constant(PROBE_IDS, tf.int64), "x": tf.constant(PROBE_X, tf.float32)}
        module.tables["lookup"][0].assign(tf.random.stateless_normal([VOCAB, DIM], seed=[1, 2]))
        module.tables["lookup"][1].assign(tf.random.stateless_normal([VOCAB, 1], seed=[3, 4]))
        export_model(module, self.args["module_dir"])
        with ctx.strategy.scope():
            subclassed = Subclassed(keras)
            subclassed(probe["id"])                         # builds it
        subclassed.bias.assign(tf.random.stateless_normal([VOCAB, 1], seed=[5, 6]))
        export_model(subclassed, self.args["subclassed_dir"])
        record(self.args, "out", {
            "keras": placement(model.weights), "keras_pred": model(probe).numpy().ravel().tolist(),
            "module": [placement(table.variables) for table in module.tables["lookup"]],
            "module_pred": module(probe["id"], probe["x"]).numpy().ravel().tolist(),
            "subclassed": placement(subclassed.bias.variables),
            "subclassed_pred": subclassed(probe["id"]).numpy().ravel().tolist(),
            "loss": history.history["loss"]})
        return model


def IdTables(keras, **kwargs):
    """A layer keeping a vector table and a bias table per id in a dict (like an FM's field tables)."""

    class IdTables(keras.layers.Layer):
        def build(self, input_shape):
            self.tables = {"vectors": self.add_weight(name="vectors", shape=(VOCAB, DIM)),
                           "bias": self.add_weight(name="bias", shape=(VOCAB, 1))}

        def call(self, ids):
            return tf.concat([tf.nn.embedding_lookup(self.tables["vectors"], ids),
                              tf.nn.embedding_lookup(self.tables["bias"], ids)], 1)

    return IdTables(**kwargs)


def Subclassed(keras):
    """A subclassed tf_keras model (``clone_model`` cannot rebuild it) with two sharded tables."""

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="subclassed")
            self.vectors = keras.layers.Embedding(VOCAB, DIM)
            self.score = keras.layers.Dense(1)
            self.bias = self.add_weight(name="bias", shape=(VOCAB, 1))

        def call(self, ids):
            return self.score(self.vectors(ids))[:, 0] + tf.gather(self.bias, ids)[:, 0]

    return Subclassed()


class TwoTables(tf.Module):
    """Two sharded tables reached through a dict of tuples, plus a dense weight."""

    def __init__(self):
        super().__init__()
        self.tables = {"lookup": (tf.Variable(tf.zeros([VOCAB, DIM])), tf.Variable(tf.zeros([VOCAB, 1])))}
        self.w = tf.Variable(tf.linspace(-1.0, 1.0, DIM)[:, None], name="w")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.float32)])
    def __call__(self, ids, x):
        vectors, bias = self.tables["lookup"]
        return tf.matmul(tf.nn.embedding_lookup(vectors, ids), self.w)[:, 0] + tf.gather(bias, ids)[:, 0] * x
