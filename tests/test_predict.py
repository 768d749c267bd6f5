"""elearn.predict: a SavedModel scoring a Spark DataFrame on the executors (real local Spark, real TF)."""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples", "fm_movielens"))

import elearn  # noqa: E402
from conftest import spark_with  # noqa: E402
from elearn.errors import ElearnError  # noqa: E402

VOCAB = {"user_idx": 7, "movie_idx": 11, "year_idx": 4, "age_idx": 5, "weekday_idx": 7, "genre_ids": 6}


@pytest.fixture(scope="module")
def fm(tmp_path_factory):
    """A small FM with random weights, exported as SavedModel: ``(keras model, model_dir)``."""
    import tensorflow as tf
    import tf_keras

    import fm_model

    tf.random.set_seed(3)
    model = fm_model.build_fm(tf_keras, VOCAB, dim=4, mean_rating=3.0)
    for w in model.weights:       # non-trivial weights, so every field changes the prediction
        w.assign(tf.random.normal(w.shape, stddev=0.5, seed=1))
    path = str(tmp_path_factory.mktemp("fm") / "model")
    model.save(path, save_format="tf", include_optimizer=False)
    return model, path


@pytest.fixture(scope="module")
def spark(local_spark):
    # Several Arrow batches per partition even for small frames.
    yield from spark_with(local_spark, **{"spark.sql.execution.arrow.maxRecordsPerBatch": 16})


def frame(spark, n=60, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        genres = sorted(rng.choice(np.arange(1, 6), size=int(rng.integers(0, 4)), replace=False).tolist())
        rows.append((i, int(rng.integers(7)), int(rng.integers(11)), genres or [0], int(rng.integers(4)),
                     int(rng.integers(5)), int(rng.integers(7)), float(rng.integers(1, 6))))
    return spark.createDataFrame(rows, "id long, user_idx int, movie_idx int, genre_ids array<int>, "
                                       "year_idx int, age_idx int, weekday_idx int, rating float")


def test_predict_matches_the_model_called_in_tensorflow(spark, fm):
    import tensorflow as tf

    model, path = fm
    df = frame(spark).repartition(3)
    scored = elearn.predict(df, path).collect()
    assert len(scored) == 60 and sorted(r.id for r in scored) == list(range(60))
    assert scored[0].asDict().keys() == set(df.columns) | {"prediction"}
    width = max(len(r.genre_ids) for r in scored)
    inputs = {k: tf.constant([r[k] for r in scored], tf.int32)
              for k in ("user_idx", "movie_idx", "year_idx", "age_idx", "weekday_idx")}
    inputs["genre_ids"] = tf.constant([r.genre_ids + [0] * (width - len(r.genre_ids)) for r in scored], tf.int32)
    want = model(inputs).numpy().ravel()
    got = np.array([r.prediction for r in scored])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.std(got) > 0.1        # the rows really differ


def loads_per_worker(spark) -> dict:
    """``{pid: models loaded}`` of the Arrow Python workers (Spark keeps a pool per UDF kind)."""
    def probe(batches):
        import pyarrow as pa

        from elearn.predict import LOADS

        for _ in batches:
            pass
        yield pa.RecordBatch.from_pydict({"pid": [os.getpid()], "loads": [LOADS["count"]]})

    return {r.pid: r.loads for r in spark.range(4, numPartitions=4).mapInArrow(probe, "pid long, loads long").collect()}


def test_a_file_url_model_is_read_where_it_is_mounted_and_loaded_once_per_python_worker(spark, fm, tmp_path):
    """``file://`` is a directory mounted on every host, read in place; scoring twice loads the
    model once in each Python worker that scores."""
    import shutil

    _, path = fm
    url = "file://" + shutil.copytree(path, str(tmp_path / "mounted" / "model"))
    before = loads_per_worker(spark)
    first = elearn.predict(frame(spark).repartition(3), url).collect()
    second = elearn.predict(frame(spark, seed=1).repartition(3), url).collect()
    assert len(first) == len(second) == 60
    after = loads_per_worker(spark)
    new = {pid: n - before.get(pid, 0) for pid, n in after.items()}
    assert set(new.values()) <= {0, 1} and 1 in new.values(), (before, after)


def test_missing_inputs_are_named_before_any_spark_job(spark, fm):
    _, path = fm
    df = frame(spark, 4).drop("genre_ids").withColumnRenamed("user_idx", "uid")
    sc = spark.sparkContext
    sc.setJobGroup("predict-check", "no job may run")
    try:
        with pytest.raises(ElearnError,
                           match=r"inputs genre_ids, user_idx are not columns.*features=\{input: column\}"):
            elearn.predict(df, path)
        # A mapping fixes a renamed column; the output column must be new.
        with pytest.raises(ElearnError, match="already has a column 'rating'"):
            elearn.predict(frame(spark, 4), path, output_col="rating")
        assert sc.statusTracker().getJobIdsForGroup("predict-check") == []
    finally:
        sc.setJobGroup("other", "")


def test_not_a_saved_model_says_what_to_pass(spark, tmp_path):
    with pytest.raises(ElearnError, match="no SavedModel at .*saved_model.pb missing"):
        elearn.predict(frame(spark, 2), str(tmp_path))
