"""tf_keras Model.fit on a PS cluster; records learned weights and each shutdown call."""
from common import FEATURES, linear_frame, record

from elearn import SparkTFJob


class LinearFit(SparkTFJob):
    def pre_train(self, spark):
        return linear_frame(spark, rows=int(self.args.get("rows", 20000)))

    def train(self, ctx):
        keras = ctx.keras
        with ctx.strategy.scope():
            inputs = {f: keras.Input(shape=(), name=f) for f in FEATURES}
            x = keras.layers.Concatenate()([keras.layers.Reshape((1,))(inputs[f]) for f in FEATURES])
            model = keras.Model(inputs, keras.layers.Dense(1, name="linear")(x))
            model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse", steps_per_execution=10)
        batch = 128
        model.fit(ctx.dataset(label="y", batch_size=batch), epochs=int(self.args.get("epochs", 4)),
                  steps_per_epoch=ctx.steps_per_epoch(batch), verbose=0,
                  callbacks=[ctx.progress_callback(batch_size=batch)])
        kernel, bias = model.get_layer("linear").get_weights()
        record(self.args, "out", {"w": kernel.ravel().tolist(), "b": float(bias[0]),
                                  "rows": ctx.rows(), "mode": ctx.mode, "num_ps": ctx.num_ps,
                                  "num_workers": ctx.num_workers, "is_chief": ctx.is_chief})
        return model

    def shutdown(self):
        record(self.args, "marker", {"shutdown": True})
