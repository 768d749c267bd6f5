"""elearn.FieldEmbeddings and elearn.hash_ids: every field's ids land on their own rows of one
table, strings hash the same in the pipeline and in the model, multi-valued fields pool, a batch
touches each distinct row once, and under ParameterServerStrategy the table shards, trains and
exports to a SavedModel that scores raw strings."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import elearn

tf = pytest.importorskip("tensorflow")
HERE = os.path.dirname(os.path.abspath(__file__))


def kerases():
    import keras
    import tf_keras

    return [pytest.param(tf_keras, id="tf_keras"), pytest.param(keras, id="keras3")]


def hashed(values, buckets):
    return elearn.hash_ids(tf.constant(values), buckets).numpy()


@pytest.mark.parametrize("keras", kerases())
def test_fields_look_up_their_own_rows_and_multi_valued_fields_pool(keras):
    layer = elearn.FieldEmbeddings({"user": 100, "site": 50, "tags": 20}, 4, keras=keras)
    x = {"user": tf.constant([1, 2, 1, 205], tf.int64),
         "site": tf.constant(["a", "b", "a", ""]),
         "tags": tf.ragged.constant([["x", "y"], [], ["x"], ["y", "y"]])}
    out = layer(x).numpy()
    assert out.shape == (4, 3, 4)
    table = np.asarray(layer.table.numpy() if hasattr(layer.table, "numpy") else layer.table)
    np.testing.assert_allclose(out[0, 0], table[1])
    np.testing.assert_allclose(out[3, 0], table[205 % 100])            # ints: modulo the buckets
    site_a = 100 + hashed(["a"], 50)[0]                                # fields at their offsets
    np.testing.assert_allclose(out[0, 1], table[site_a])
    np.testing.assert_allclose(out[2, 1], table[site_a])
    np.testing.assert_allclose(out[3, 1], 0)                           # "" is missing
    tag_x, tag_y = (150 + hashed([t], 20)[0] for t in ("x", "y"))
    np.testing.assert_allclose(out[0, 2], (table[tag_x] + table[tag_y]) / 2, rtol=1e-6)  # mean
    np.testing.assert_allclose(out[1, 2], 0)                           # an empty row
    np.testing.assert_allclose(out[3, 2], table[tag_y], rtol=1e-6)
    # The same tags padded with "" (the feed's dense form of array<string>) embed the same.
    padded = layer({**x, "tags": tf.constant([["x", "y"], ["", ""], ["x", ""], ["y", "y"]])}).numpy()
    np.testing.assert_allclose(padded, out, rtol=1e-6)


def test_sum_pools_and_negative_ids_are_padding():
    import tf_keras

    layer = elearn.FieldEmbeddings({"items": 10}, 2, combiner="sum", keras=tf_keras)
    out = layer({"items": tf.constant([[3, 3, -1], [-1, -1, -1]], tf.int64)}).numpy()
    table = layer.table.numpy()
    np.testing.assert_allclose(out[0, 0], 2 * table[3], rtol=1e-6)
    np.testing.assert_allclose(out[1, 0], 0)


def test_a_batch_updates_each_distinct_row_once():
    import tf_keras

    layer = elearn.FieldEmbeddings({"user": 100, "item": 100}, 4, keras=tf_keras)
    users = tf.constant([7, 7, 7, 8, 7, 8], tf.int64)
    items = tf.constant([7, 1, 1, 1, 1, 1], tf.int64)
    layer({"user": users, "item": items})
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer({"user": users, "item": items}))
    grad = tape.gradient(loss, layer.table)
    assert isinstance(grad, tf.IndexedSlices)                          # a scatter, not a dense table
    assert sorted(grad.indices.numpy().tolist()) == [7, 8, 101, 107]   # 12 ids, 4 distinct rows
    counts = dict(zip(grad.indices.numpy().tolist(), grad.values.numpy()[:, 0].tolist()))
    assert counts == {7: 4.0, 8: 2.0, 107: 1.0, 101: 5.0}              # each row's uses summed


def test_hashing_in_the_pipeline_equals_hashing_in_the_model():
    import tf_keras

    layer = elearn.FieldEmbeddings({"site": 1000, "tags": 64}, 3, keras=tf_keras)
    raw = {"site": tf.constant(["news", "shop", "mail"]),
           "tags": tf.ragged.constant([["a", "b"], ["c"], []])}
    ids = {"site": elearn.hash_ids(raw["site"], 1000), "tags": elearn.hash_ids(raw["tags"], 64)}
    assert ids["site"].dtype == tf.int64 and isinstance(ids["tags"], tf.RaggedTensor)
    assert int(tf.reduce_max(ids["site"])) < 1000
    np.testing.assert_allclose(layer(ids).numpy(), layer(raw).numpy())


def test_bad_arguments_name_the_problem():
    import tf_keras

    with pytest.raises(ValueError, match="buckets must be positive integers.*'b': 0"):
        elearn.FieldEmbeddings({"a": 10, "b": 0}, 4, keras=tf_keras)
    with pytest.raises(ValueError, match="combiner 'max' is not one of mean, sum"):
        elearn.FieldEmbeddings({"a": 10}, 4, combiner="max", keras=tf_keras)
    layer = elearn.FieldEmbeddings({"a": 10, "b": 10}, 4, keras=tf_keras)
    with pytest.raises(KeyError, match=r"no input for field\(s\) \['b'\]"):
        layer({"a": tf.constant([1], tf.int64)})
    with pytest.raises(TypeError, match="cast float ids to int64"):
        elearn.hash_ids(tf.constant([1.5]), 10)


def test_sharded_over_two_parameter_servers_it_trains_and_exports_for_raw_strings(tmp_path):
    """In a process of its own: ParameterServerStrategy binds the process to its cluster."""
    proc = subprocess.run([sys.executable, os.path.join(HERE, "jobs", "embeddings_pss.py"), str(tmp_path / "model")],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["shards"] == [532, 532]                 # 1064 rows (1000 + 64) over both PS
    assert seen["loss"][-1] < 0.5 * seen["loss"][0], seen["loss"]
    # Scored by the loaded SavedModel from raw strings; the planted rule is learnable to ~100%.
    assert seen["accuracy"] > 0.9 > seen["base_rate"] + 0.2, seen
    assert seen["signature"] == ["tags", "user"]


def test_under_a_mirrored_strategy_it_reads_rows_of_its_own_copy_and_trains_as_without_one():
    """Allreduce mode's strategy, in a process of its own (it configures the process's collectives):
    the lookup gathers rows of the worker's own copy of the table (ResourceGather) rather than
    reading the mirrored table whole (ReadVariableOp, then GatherV2: what embedding_lookup does to a
    mirrored variable), and three steps of a row-wise optimizer move exactly the looked-up rows, to
    the same values as without a strategy."""
    proc = subprocess.run([sys.executable, os.path.join(HERE, "jobs", "embeddings_mirrored.py")],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    for keras in ("tf_keras", "keras"):
        assert "ResourceGather" in seen[keras] and "ReadVariableOp" not in seen[keras], seen[keras]
    assert seen["moved_rows"] == [1, 2, 7, 100 + 1, 100 + 2, 100 + 5]   # users 1, 2, 7; tags 1, 2, 5
    assert seen["max_difference"] < 1e-6
