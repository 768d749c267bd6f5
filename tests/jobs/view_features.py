"""Features from a temp view the user registered on their own session before submitting."""
from common import linear_model, record

from elearn import SparkTFJob


class ViewFeatures(SparkTFJob):
    def pre_train(self, spark):
        return spark.table(self.args["view"])

    def train(self, ctx):
        with ctx.strategy.scope():
            model = linear_model(ctx.keras)
        model.fit(ctx.dataset(label="y", batch_size=64), epochs=10, steps_per_epoch=ctx.steps_per_epoch(64),
                  verbose=0)
        kernel, _ = model.get_layer("linear").get_weights()
        if ctx.is_chief:
            record(self.args, "out", {"mode": ctx.mode, "w": kernel.ravel().tolist()})
        return model
