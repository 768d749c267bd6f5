"""A model with one large embedding table and tf_keras's current Adagrad, fitted for a few steps;
records the coordinator's peak memory before and after ``fit`` and where the slots live."""
from common import FEATURES, linear_frame, record

from elearn import SparkTFJob


def peak_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmHWM:"))


class SlotMemory(SparkTFJob):
    def pre_train(self, spark):
        return linear_frame(spark, rows=2000)

    def train(self, ctx):
        import tensorflow as tf

        keras, rows = ctx.keras, int(self.args["rows"])
        with ctx.strategy.scope():
            inputs = {f: keras.Input(shape=(), name=f) for f in FEATURES}
            ids = keras.layers.Lambda(lambda x: tf.cast(tf.abs(x) * 1000, tf.int64))(inputs["x0"])
            vectors = keras.layers.Embedding(rows, 16, name="table")(ids)
            model = keras.Model(inputs, keras.layers.Dense(1)(vectors))
            model.compile(keras.optimizers.Adagrad(0.1), "mse")
        before = peak_bytes()
        history = model.fit(ctx.dataset(label="y", batch_size=100), epochs=1,
                            steps_per_epoch=ctx.steps_per_epoch(100))
        slots = [v.device for v in model.optimizer.variables if "accumulator" in v.name]
        record(self.args, "out", {"growth": peak_bytes() - before, "slots": slots,
                                  "loss": history.history["loss"][-1]})
        return None
