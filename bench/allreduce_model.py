"""What every variant of bench/allreduce.py trains: one dense classifier, one synthetic data set."""
import time

import numpy as np

N_FEATURES = 16
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
BATCH = 256      # rows per worker per step
EPOCHS = 3       # the first is warm-up (tracing, pipeline fill) and is not timed


def make_data(rows: int):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (rows, N_FEATURES)).astype(np.float32)
    w = rng.normal(size=N_FEATURES).astype(np.float32)
    return x, (x @ w > 0).astype(np.int64)


def build_model(keras):
    inputs = {f: keras.Input(shape=(), name=f) for f in FEATURES}
    x = keras.layers.Concatenate()([keras.layers.Reshape((1,))(inputs[f]) for f in FEATURES])
    x = keras.layers.Dense(64, activation="relu")(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    model.compile(optimizer=keras.optimizers.Adam(0.001),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def Timer(keras, examples_per_epoch: int):
    """Examples per second over the epochs after the first."""

    class _Timer(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                self.start, self.epochs = time.perf_counter(), 0
            else:
                self.epochs += 1
                self.end = time.perf_counter()

        def rate(self):
            return self.epochs * examples_per_epoch / (self.end - self.start)

    return _Timer()
