"""tf_keras Model.fit on a PS cluster; records learned weights and each shutdown call."""
from common import linear_frame, linear_model, record

from elearn import SparkTFJob


class LinearFit(SparkTFJob):
    def pre_train(self, spark):
        return linear_frame(spark, rows=int(self.args.get("rows", 20000)))

    def train(self, ctx):
        with ctx.strategy.scope():
            model = linear_model(ctx.keras, steps_per_execution=10)
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
