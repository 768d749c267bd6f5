"""Which optimizers apply an embedding gradient to the looked-up rows only, and what the others cost.

    python bench/optimizers.py [--rows 2000000] [--dim 16] [--touched 1000] [--steps 5] [--strategy mwms]

One process, no strategy (or, with ``--strategy mwms``, under a one-worker
MultiWorkerMirroredStrategy, as elearn's allreduce mode trains): a ``rows x dim`` float table and an ``IndexedSlices`` gradient of
``touched`` rows (what an embedding lookup's gradient is); each optimizer applies it ``steps``
times inside a ``tf.function`` after one warm-up step, and the CPU time per update is reported
(process CPU: every TF thread counted), with the ratio to tf_keras Adagrad. A row-wise update costs
about the same whatever the table's size; a whole-table one grows with it. This is the table behind
``elearn/train/optimizers.py``'s warning.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def candidates():
    import keras
    import tf_keras

    tk, legacy, k3 = tf_keras.optimizers, tf_keras.optimizers.legacy, keras.optimizers
    return [
        ("tf_keras Adagrad", "tf_keras", lambda: tk.Adagrad(0.1)),
        ("tf_keras SGD", "tf_keras", lambda: tk.SGD(0.1)),
        ("tf_keras SGD momentum 0.9", "tf_keras", lambda: tk.SGD(0.1, momentum=0.9)),
        ("tf_keras SGD jit_compile=False", "tf_keras", lambda: tk.SGD(0.1, jit_compile=False)),
        ("tf_keras Adam", "tf_keras", lambda: tk.Adam()),
        ("tf_keras Ftrl", "tf_keras", lambda: tk.Ftrl()),
        ("tf_keras legacy Adagrad", "tf_keras", lambda: legacy.Adagrad(0.1)),
        ("tf_keras legacy SGD", "tf_keras", lambda: legacy.SGD(0.1)),
        ("tf_keras legacy SGD momentum 0.9", "tf_keras", lambda: legacy.SGD(0.1, momentum=0.9)),
        ("tf_keras legacy Ftrl", "tf_keras", lambda: legacy.Ftrl()),
        ("tf_keras legacy Adam", "tf_keras", lambda: legacy.Adam()),
        ("Keras 3 SGD", "keras", lambda: k3.SGD(0.1)),
        ("Keras 3 SGD momentum 0.9", "keras", lambda: k3.SGD(0.1, momentum=0.9)),
        ("Keras 3 Adagrad", "keras", lambda: k3.Adagrad(0.1)),
        ("Keras 3 Adam", "keras", lambda: k3.Adam()),
        ("Keras 3 Ftrl", "keras", lambda: k3.Ftrl()),
    ]


def cpu_ms_per_update(kind: str, make, rows: int, dim: int, touched: int, steps: int, strategy) -> float:
    import keras
    import tensorflow as tf

    with strategy.scope():
        table = keras.Variable(tf.zeros([rows, dim])) if kind == "keras" else tf.Variable(tf.zeros([rows, dim]))
        optimizer = make()
        if kind == "keras":
            optimizer.build([table])
    grad = tf.IndexedSlices(tf.ones([touched, dim]), tf.range(touched, dtype=tf.int64) * (rows // touched),
                            tf.constant([rows, dim], tf.int64))

    @tf.function
    def step():
        strategy.run(lambda: optimizer.apply_gradients([(grad, table)]))

    step()
    start = time.process_time()
    for _ in range(steps):
        step()
    return (time.process_time() - start) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--touched", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--strategy", choices=("none", "mwms"), default="none")
    a = parser.parse_args()
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy() if a.strategy == "mwms" else tf.distribute.get_strategy()
    print(f"table {a.rows:,} x {a.dim} ({a.rows * a.dim * 4 / 2**20:,.0f} MiB), gradient of {a.touched:,} rows, "
          f"strategy {a.strategy}")
    results = [(name, cpu_ms_per_update(kind, make, a.rows, a.dim, a.touched, a.steps, strategy))
               for name, kind, make in candidates()]
    base = results[0][1]
    print(f"| optimizer | CPU ms per update | vs {results[0][0]} |\n| --- | ---: | ---: |")
    for name, ms in results:
        print(f"| {name} | {ms:,.1f} | {ms / base:,.1f}x |")


if __name__ == "__main__":
    main()
