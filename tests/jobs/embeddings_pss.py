"""FieldEmbeddings under ParameterServerStrategy, in one process (run by tests/test_embeddings.py).

This process is the chief of an in-process cluster of one worker and two parameter servers
(``tf.distribute.Server``s), so the layer's table is a ``ShardedVariable`` of two shards, as in PS
mode. It trains a model whose label is a planted function of a string field and a multi-valued tag
field, exports it with elearn's exporter and scores raw strings with the loaded SavedModel; prints
one JSON line of what it saw.
"""
import json
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

import elearn  # noqa: E402
from elearn.train.export import export_model  # noqa: E402

# The in-process cluster bench/reshard_probe.py measures resharding on: 1 worker, N PS, this process
# the chief, every variable split over all PS.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench"))
from reshard_probe import cluster  # noqa: E402


def data(n, seed):
    """Label 1 when the user is one of the 'good' users or the row carries tag t1."""
    rng = np.random.default_rng(seed)
    users = np.array([f"u{i}" for i in rng.integers(0, 200, n)])
    tags = [[f"t{j}" for j in rng.integers(0, 8, rng.integers(0, 4))] for _ in range(n)]
    good = np.array([int(u[1:]) % 3 == 0 for u in users])
    label = (good | np.array(["t1" in t for t in tags])).astype("float32")
    # padded with "" to the longest row, as the feed gives array<string> columns (missing values)
    return {"user": users, "tags": tf.ragged.constant(tags, dtype=tf.string).to_tensor("")}, label


def main():
    strategy, _servers = cluster(2)
    with strategy.scope():
        emb = elearn.FieldEmbeddings({"user": 1000, "tags": 64}, 8, keras=tf_keras)
        inputs = {"user": tf_keras.Input((), dtype=tf.string, name="user"),
                  "tags": tf_keras.Input((None,), dtype=tf.string, name="tags")}
        hidden = tf_keras.layers.Dense(16, activation="relu")(tf_keras.layers.Flatten()(emb(inputs)))
        model = tf_keras.Model(inputs, tf_keras.layers.Dense(1, activation="sigmoid")(hidden))
        model.compile(tf_keras.optimizers.Adagrad(0.5), "binary_crossentropy", steps_per_execution=5)
    features, label = data(4096, 1)

    def dataset(_):
        return tf.data.Dataset.from_tensor_slices((features, label)).shuffle(4096, seed=1).batch(256).repeat()

    history = model.fit(tf_keras.utils.experimental.DatasetCreator(dataset), epochs=6, steps_per_epoch=16,
                        verbose=0)
    table = emb.table
    shards = [int(v.shape[0]) for v in getattr(table, "variables", [table])]
    test, test_label = data(1000, 2)
    path = export_model(model, sys.argv[1])
    served = tf.saved_model.load(path).signatures["serving_default"]
    out = served(user=tf.constant(test["user"]), tags=test["tags"])
    scores = next(iter(out.values())).numpy().reshape(-1)
    accuracy = float(np.mean((scores > 0.5) == (test_label > 0.5)))
    print(json.dumps({"shards": shards, "loss": [float(x) for x in history.history["loss"]],
                      "accuracy": accuracy, "base_rate": float(max(test_label.mean(), 1 - test_label.mean())),
                      "signature": sorted(served.structured_input_signature[1])}), flush=True)


if __name__ == "__main__":
    main()
