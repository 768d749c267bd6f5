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


# -- several outputs, vector outputs, ML Vector / timestamp / date inputs, signature mismatches -------

def row_sum(t):
    """float64 sums of the rows (a module function: a Lambda's closure would be saved with it)."""
    import tensorflow as tf

    return tf.cast(tf.reduce_sum(t, 1), tf.float64)


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """A tf_keras model with outputs ``score`` float32 [b, 1], ``probs`` float32 [b, 3] and
    ``total`` float64 [b], from inputs ``x`` float32 [b, 3] and ``w`` float32 [b]."""
    import tensorflow as tf
    import tf_keras as keras

    tf.random.set_seed(5)
    x = keras.Input((3,), name="x")
    w = keras.Input((), name="w")
    h = keras.layers.Concatenate()([x, keras.layers.Reshape((1,))(w)])
    score = keras.layers.Dense(1, name="score")(h)
    probs = keras.layers.Dense(3, activation="softmax", name="probs")(h)
    total = keras.layers.Lambda(row_sum, name="total")(h)
    model = keras.Model({"x": x, "w": w}, [score, probs, total])
    path = str(tmp_path_factory.mktemp("three") / "model")
    model.save(path, save_format="tf", include_optimizer=False)
    return model, path


class Stamped:
    """A ``tf.Module`` scoring an ML Vector ``v`` (float32 [b, 4]), a timestamp ``at`` (int64
    microseconds) and a date ``day`` (int64 days): ``emb`` float64 [b, 2] and ``tag`` string [b].
    Its signature ``cube`` returns [b, 2, 2], which no column can hold."""

    def __new__(cls):
        import tensorflow as tf

        class Module(tf.Module):
            def __init__(self):
                super().__init__()
                self.w = tf.Variable(tf.reshape(tf.range(8, dtype=tf.float32) / 4 - 1, (4, 2)))

            @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="v"),
                                          tf.TensorSpec([None], tf.int64, name="at"),
                                          tf.TensorSpec([None], tf.int64, name="day")])
            def __call__(self, v, at, day):
                emb = tf.cast(v @ self.w, tf.float64) + tf.cast(at % 1_000_000_007, tf.float64)[:, None]
                return {"emb": emb, "tag": tf.strings.join(["d", tf.strings.as_string(day)])}

            @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="v")])
            def cube(self, v):
                return {"c": tf.reshape(v, (-1, 2, 2))}

        return Module()


@pytest.fixture(scope="module")
def stamped(tmp_path_factory):
    import tensorflow as tf

    module = Stamped()
    path = str(tmp_path_factory.mktemp("stamped") / "model")
    tf.saved_model.save(module, path, signatures={"serving_default": module.__call__, "cube": module.cube})
    return module, path


def three_frame(spark, n=50):
    rng = np.random.default_rng(4)
    rows = [(i, rng.normal(size=3).astype(np.float32).tolist(), float(rng.normal())) for i in range(n)]
    return spark.createDataFrame(rows, "id long, x array<float>, w float").repartition(3)


def test_a_three_output_model_writes_a_column_per_output_each_as_tensorflow_computes_it(spark, three):
    """[b, 1] and [b] outputs become double columns, a float32 [b, 3] output an array<float>
    column, each named <output_col>_<output>; output= picks one into output_col."""
    import tensorflow as tf

    model, path = three
    scored = elearn.predict(three_frame(spark), path, output_col="p")
    types = {f.name: f.dataType.simpleString() for f in scored.schema.fields}
    assert types == {"id": "bigint", "x": "array<float>", "w": "float", "p_probs": "array<float>",
                     "p_score": "double", "p_total": "double"}
    rows = sorted(scored.collect(), key=lambda r: r.id)
    assert [r.id for r in rows] == list(range(50))
    score, probs, total = model({"x": tf.constant([r.x for r in rows], tf.float32),
                                 "w": tf.constant([r.w for r in rows], tf.float32)})
    # float32: the executors' batches (a partition's rows) and this one batch of 50 round the
    # matmul's last bits differently (1.2e-8 seen on a score of -0.005, relative 2.4e-6), hence atol.
    np.testing.assert_allclose([r.p_score for r in rows], score.numpy()[:, 0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose([r.p_probs for r in rows], probs.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose([r.p_total for r in rows], total.numpy(), rtol=1e-12)
    assert np.std([r.p_score for r in rows]) > 0.1     # the rows really differ

    picked = elearn.predict(three_frame(spark), path, output="probs")
    assert picked.columns == ["id", "x", "w", "prediction"]
    assert picked.schema["prediction"].dataType.simpleString() == "array<float>"
    got = sorted(picked.collect(), key=lambda r: r.id)
    np.testing.assert_allclose([r.prediction for r in got], probs.numpy(), rtol=1e-6, atol=1e-6)


def stamped_frame(spark):
    """``v``: ML Vectors, dense and sparse; ``at``: timestamps of known microseconds; ``day``: dates."""
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import functions as F

    vectors = [Vectors.dense([1.0, -2.0, 0.5, 3.0]), Vectors.sparse(4, {1: 2.5}), Vectors.sparse(4, {}),
               Vectors.dense([0.0, 0.0, 0.0, 7.0])]
    rows = [(i, vectors[i % 4], 1_700_000_000_123_456 + i * 86_400_000_001 - 40 * i * i) for i in range(40)]
    df = spark.createDataFrame(rows, ["id", "v", "micros"]).repartition(3)
    return (df.withColumn("at", F.timestamp_micros("micros"))
              .withColumn("day", F.date_add(F.lit("2020-02-27").cast("date"), F.col("id").cast("int"))))


def stamped_want(module, rows):
    """What the module returns for ``rows``, fed the way the feed encodes them."""
    import datetime

    import tensorflow as tf

    epoch = datetime.date(1970, 1, 1)
    return module(tf.constant([r.v.toArray() for r in rows], tf.float32),
                  tf.constant([r.micros for r in rows], tf.int64),
                  tf.constant([(r.day - epoch).days for r in rows], tf.int64))


def test_ml_vector_timestamp_and_date_inputs_and_a_vector_output(spark, stamped):
    """A Vector column (dense and sparse rows) arrives as [b, 4], a timestamp as int64
    microseconds since the epoch and a date as int64 days (the feed's encodings); the float64
    [b, 2] output is an array<double> column, the string output a string column. The input
    columns are kept as they were."""
    from elearn import sparse_vectors

    module, path = stamped
    df = stamped_frame(spark)
    scored = elearn.predict(df, path)
    assert {f.name: f.dataType.simpleString() for f in scored.schema.fields if f.name.startswith("prediction")} \
        == {"prediction_emb": "array<double>", "prediction_tag": "string"}
    rows = sorted(scored.collect(), key=lambda r: r.id)
    original = sorted(df.collect(), key=lambda r: r.id)
    assert [(r.v, r.at, r.day) for r in rows] == [(r.v, r.at, r.day) for r in original]
    want = stamped_want(module, rows)
    # float64 sums of a float32 product (~10) and microseconds mod a prime (~1e9): both must match.
    np.testing.assert_allclose([r.prediction_emb for r in rows], want["emb"].numpy(), rtol=0, atol=1e-5)
    assert [r.prediction_tag for r in rows] == [t.decode() for t in want["tag"].numpy()]
    assert len({r.prediction_tag for r in rows}) == 40 and len({tuple(r.prediction_emb) for r in rows}) == 40

    # The vector output alone, and the same vectors declared sparse for the feed.
    one = sorted(elearn.predict(sparse_vectors(df, "v"), path, output="emb").collect(), key=lambda r: r.id)
    np.testing.assert_allclose([r.prediction for r in one], want["emb"].numpy(), rtol=0, atol=1e-5)


def test_a_vector_of_another_size_fails_the_scoring_task_naming_it(spark, stamped):
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import functions as F

    _, path = stamped
    df = spark.createDataFrame([(Vectors.dense([1.0, 2.0, 3.0]),)], ["v"]).select(
        "v", F.current_timestamp().alias("at"), F.lit(3).cast("bigint").alias("day"))
    with pytest.raises(Exception, match="column 'v' holds vectors of size 3 but input 'v' takes 4"):
        elearn.predict(df, path).collect()


def test_a_signature_that_does_not_fit_the_frame_is_refused_before_any_spark_job(spark, three, stamped):
    """Each mismatch is named with its fix, on the driver, and no Spark job starts."""
    from pyspark.sql import functions as F

    _, path = three
    _, stamped_path = stamped
    sc = spark.sparkContext
    sc.setJobGroup("predict-fit", "no job may run")
    try:
        base = spark.range(3).select(F.array(*[F.lit(0.5).cast("float")] * 3).alias("x"),
                                     F.lit(1.0).alias("w"), F.lit("a").alias("s"),
                                     F.current_timestamp().alias("ts"), F.create_map(F.lit("k"), F.lit(1)).alias("m"))
        refused = {
            # a missing input
            r"inputs w are not columns of the DataFrame.*features=\{input: column\}":
                dict(df=base.drop("w")),
            # a rank the column cannot give: one value per row for [batch, 3] ...
            r"input 'x' \(float32 \[batch, 3\]\) from column 'w' \(double\): the column holds one value "
            r"per row but the input takes 3; feed an array or ML Vector column":
                dict(features={"x": "w"}),
            # ... and arrays for [batch]
            r"input 'w' \(float32 \[batch\]\) from column 'x' \(array<float>\): the column holds arrays "
            r"but the input takes one value per row":
                dict(features={"w": "x"}),
            # a string column for a float input
            r"input 'w' \(float32 \[batch\]\) from column 's' \(string\): a string column cannot feed a "
            r"numeric input; turn it into numbers in Spark first":
                dict(features={"w": "s"}),
            # a timestamp (int64 microseconds) for a float32 input
            r"input 'w' .* from column 'ts' \(timestamp\): a timestamp is fed as int64 microseconds "
            r"since 1970-01-01 UTC .* which float32 cannot hold; export the input as int64":
                dict(features={"w": "ts"}),
            # a column type the feed does not take
            r"input 'w' from column 'm' \(map<string,int>\): predict feeds numbers, .*convert it":
                dict(features={"w": "m"}),
            # features= naming no input
            r"features= names 'z', not inputs of the signature \(inputs: w, x\)":
                dict(features={"z": "w"}),
            # an output that does not exist
            r"output 'nope' is not an output of 'serving_default'; outputs: probs, score, total: "
            r"pass one of them as output=":
                dict(output="nope"),
            # a new column that exists
            r"already has a column 'x_probs' \(new columns: x_probs, x_score, x_total\); pass output_col=":
                dict(df=base.withColumn("x_probs", F.lit(1)), output_col="x"),
        }
        for pattern, kwargs in refused.items():
            df = kwargs.pop("df", base)
            with pytest.raises(ElearnError, match=pattern):
                elearn.predict(df, path, **kwargs)
        # An output no column can hold.
        with pytest.raises(ElearnError, match=r"output 'c' \(float32 \[batch, 2, 2\]\): predict writes \[batch\] "
                                              r"or \[batch, 1\] .* reshape it in the serving signature"):
            elearn.predict(base.select(F.array(*[F.lit(1.0)] * 4).alias("v")), stamped_path, signature="cube")
        # All mismatches of one call are named together.
        with pytest.raises(ElearnError, match=r"input 'w' .*string.*; input 'x' .*holds one value per row"):
            elearn.predict(base, path, features={"w": "s", "x": "w"})
        assert sc.statusTracker().getJobIdsForGroup("predict-fit") == []
    finally:
        sc.setJobGroup("other", "")
