"""MultiWorkerMirroredStrategy for an allreduce worker's training process, from its ``TF_CONFIG``."""
from __future__ import annotations

import os

from elearn.mpi import keras_fixes


def build_strategy(workers: int):
    import tensorflow as tf

    if workers == 1:
        # No peers: the strategy stays in-process (no gRPC server, no collective round trips).
        os.environ.pop("TF_CONFIG", None)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    keras_fixes.apply()  # Keras 3's fit under a multi-worker strategy
    return strategy
