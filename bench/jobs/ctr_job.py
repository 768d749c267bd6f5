"""bench/ctr.py's DeepFM as an elearn job, in either mode.

Arguments (``--arg KEY=VALUE``): ``data`` (the directory bench/ctr_model.cached_data wrote),
``out`` (a JSON-lines file: one record per epoch end, then the result), ``batch``, ``epochs``,
``spe`` (steps_per_execution), ``scale``, ``optimizer``, ``lookup``, ``tables``, ``keras``
(allreduce mode: ``keras`` for Keras 3, elearn's default there, or ``tf_keras``), ``probe``
(``reader``: before training, time this worker's dataset alone, in allreduce mode).
"""
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import ctr_model  # noqa: E402

from elearn import SparkTFJob  # noqa: E402


def _write(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


class CTRBench(SparkTFJob):
    def pre_train(self, spark):
        return spark.read.parquet(os.path.join(self.args["data"], "train.parquet"))

    def train(self, ctx):
        import importlib

        a = self.args
        batch, epochs, spe = int(a.get("batch", 1024)), int(a.get("epochs", 3)), int(a.get("spe", 25))
        keras = ctx.keras if ctx.mode == "ps" else importlib.import_module(a.get("keras", "keras"))
        out = a["out"]
        if a.get("probe") == "reader" and ctx.is_chief:
            self._time_reader(ctx, batch, out)
        with ctx.strategy.scope():
            model = ctr_model.build_model(keras, float(a.get("scale", 1.0)), a.get("lookup", "keras"),
                                          a.get("tables", "field"))
            ctr_model.compile_model(keras, model, a.get("optimizer", "adagrad"), spe)
        steps = ctx.steps_per_epoch(batch)
        per_step = batch * (ctx.num_workers if ctx.mode == "allreduce" else 1)

        class Stamps(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if ctx.is_chief:
                    _write(out, {"epoch": epoch, "time": time.time(), "examples": steps * per_step,
                                 "loss": float((logs or {}).get("loss", float("nan")))})

        model.fit(ctx.dataset(label=ctr_model.LABEL, batch_size=batch), epochs=epochs,
                  steps_per_epoch=steps, verbose=0, callbacks=[Stamps()])
        if ctx.is_chief:
            test = ctr_model.load(os.path.join(a["data"], "test.npz"))
            t = time.time()
            scores = ctr_model.predict(model, test)
            _write(out, {"auc": ctr_model.auc(test[ctr_model.LABEL], scores), "steps_per_epoch": steps,
                         "eval_seconds": time.time() - t, "spe": spe, "keras": keras.__name__,
                         "optimizer": type(model.optimizer).__module__ + "." + type(model.optimizer).__name__})
        return None

    @staticmethod
    def _time_reader(ctx, batch, out):
        """This worker's spool read by the dataset alone (no model), after one warm-up pass."""
        import tensorflow as tf

        ds = ctx.dataset_fn(label=ctr_model.LABEL, batch_size=batch, repeat=False)()

        def rows():
            return int(ds.reduce(tf.constant(0, tf.int64), lambda n, b: n + tf.shape(b[1], tf.int64)[0]))

        rows()  # warm-up: tracing, first reads into the page cache
        rates, cpu = [], []
        for _ in range(3):
            t, c = time.perf_counter(), time.process_time()   # process-wide: all TF threads
            n = rows()
            rates.append(n / (time.perf_counter() - t))
            cpu.append((time.process_time() - c) / n)
        _write(out, {"reader_rows_per_s": max(rates), "reader_rounds": rates,
                     "reader_cpu_us_per_row": 1e6 * min(cpu)})
