"""The model and data of bench/allreduce.py as an elearn job (allreduce mode)."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from allreduce_model import BATCH, EPOCHS, FEATURES, Timer, build_model, make_data  # noqa: E402

from elearn import SparkTFJob  # noqa: E402


class AllreduceBench(SparkTFJob):
    def pre_train(self, spark):
        import pandas as pd

        x, y = make_data(int(self.args["rows"]))
        frame = pd.DataFrame({f: x[:, i] for i, f in enumerate(FEATURES)})
        frame["label"] = y
        return spark.createDataFrame(frame)

    def train(self, ctx):
        keras = ctx.keras
        with ctx.strategy.scope():
            model = build_model(keras)
        steps = ctx.steps_per_epoch(BATCH)
        timer = Timer(keras, steps * BATCH * ctx.num_workers)
        model.fit(ctx.dataset(label="label", batch_size=BATCH, shuffle=False), epochs=EPOCHS,
                  steps_per_epoch=steps, verbose=0, callbacks=[timer])
        if ctx.is_chief:
            with open(self.args["out"], "w") as f:
                json.dump({"examples_per_s": timer.rate(), "steps_per_epoch": steps}, f)
        return None
