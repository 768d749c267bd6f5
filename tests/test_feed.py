"""The Arrow feed through real Spark: plan -> mapInArrow -> spool -> native TF reader -> TrainContext.

One in-process local Spark session; each worker's partition is spooled by the same function the
worker tasks run (``spool_partition``) inside a real ``mapInArrow`` job, and read back through
``TrainContext.dataset_fn`` exactly as ``train`` would. No mocks.
"""
from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

from conftest import spark_with  # noqa: E402
from elearn.driver.options import SubmitOptions  # noqa: E402
from elearn.mpi import AllreduceBackend  # noqa: E402
from elearn import FeedError, TrainContext, sparse_vectors  # noqa: E402
from elearn.feed.plan import normalize_frames, plan_feed  # noqa: E402
from elearn.feed.columns import FeedInfo  # noqa: E402
from elearn.feed.shares import Coordination  # noqa: E402
from elearn.cluster.zookeeper import EmbeddedZooKeeper  # noqa: E402

HEARTBEAT = SubmitOptions().heartbeat_timeout  # --heartbeat-timeout's default


@pytest.fixture(scope="module")
def spark(local_spark):
    yield from spark_with(local_spark, **{"spark.sql.shuffle.partitions": 4,
                                          "spark.sql.session.timeZone": "UTC"})


@pytest.fixture(scope="module")
def zookeeper(tmp_path_factory):
    """The embedded server the exact-shares counter lives in, as in every application."""
    with EmbeddedZooKeeper(str(tmp_path_factory.mktemp("zk"))) as zk:
        yield zk


@pytest.fixture
def shares(zookeeper, request):
    """One application's shares znode: each test deals from a fresh counter."""
    return Coordination(zookeeper.hosts, None, f"/elearn/test-{request.node.name[:40]}-{os.getpid()}/shares")


def spool_frames(frames, workers, root, coordination, chunk_rows=65536) -> dict:
    """What the worker job does, minus the TF server: returns ``{name: FeedInfo}``."""
    import pyarrow as pa

    from elearn.feed.partition import spool_partition

    frame, plan = plan_feed(normalize_frames(frames), workers, coordination)

    def task(batches):
        from pyspark import TaskContext

        index = TaskContext.get().partitionId()
        metas = spool_partition(batches, plan, str(root), index, chunk_rows=chunk_rows)
        yield pa.RecordBatch.from_pydict({"part": [index], "metas": [json.dumps(metas)]})

    rows = sorted(frame.mapInArrow(task, "part long, metas string").collect())
    assert [r.part for r in rows] == list(range(workers))
    metas = [json.loads(r.metas) for r in rows]
    return {name: FeedInfo.gather(name, plan, [m[name] for m in metas]) for name in plan.names}


def context(feeds, mode="allreduce", worker=0, workers=None, fill=None) -> TrainContext:
    from elearn.ps import PSBackend

    n = workers or (len(next(iter(feeds.values())).rows) if feeds else 1)
    backend = PSBackend(1) if mode == "ps" else AllreduceBackend(n, HEARTBEAT)
    return TrainContext(strategy=None, _backend=backend, task_type="worker", task_index=worker,
                        num_workers=n, num_ps=1 if mode == "ps" else 0, checkpoint_dir="",
                        model_dir="", log_dir="", args={}, feeds=feeds, fill=fill or {})


def read_all(feeds, name="train", **kwargs):
    """Every worker's rows as ``{column: ndarray}`` in id order (unbatched)."""
    out = {}
    for w in range(len(feeds[name].rows)):
        for batch in context(feeds, worker=w).dataset_fn(name, repeat=False, **kwargs)():
            features = batch[0] if isinstance(batch, tuple) else batch
            for k, v in features.items():
                out.setdefault(k, []).append(v)
    return out


def ids_per_worker(feeds, epochs, **kwargs):
    """``[worker][epoch] -> list of ids`` read through a repeating dataset, split at epoch size."""
    seen = []
    for w, rows in enumerate(feeds["train"].rows):
        ds = context(feeds, worker=w).dataset_fn(features=["id"], repeat=True, **kwargs)()
        stream = []
        for batch in ds:
            stream.extend(batch["id"].numpy().tolist())
            if len(stream) >= rows * epochs:
                break
        seen.append([stream[e * rows:(e + 1) * rows] for e in range(epochs)])
    return seen


# -- types -----------------------------------------------------------------------------------------
def typed_frame(spark, n):
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql import types as T

    schema = T.StructType([
        T.StructField("id", T.LongType()), T.StructField("i8", T.ByteType()),
        T.StructField("i16", T.ShortType()), T.StructField("i32", T.IntegerType()),
        T.StructField("f32", T.FloatType()), T.StructField("f64", T.DoubleType()),
        T.StructField("flag", T.BooleanType()), T.StructField("name", T.StringType()),
        T.StructField("blob", T.BinaryType()), T.StructField("day", T.DateType()),
        T.StructField("ts", T.TimestampType()), T.StructField("money", T.DecimalType(10, 2)),
        T.StructField("fixed", T.ArrayType(T.IntegerType())),
        T.StructField("var", T.ArrayType(T.DoubleType())),
        T.StructField("dvec", VectorUDT()), T.StructField("svec", VectorUDT()),
        T.StructField("sparse", VectorUDT()),
    ])
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    rows = []
    for i in range(n):
        rows.append((
            i, i % 100 - 50, i * 7 - 300, i * 1000, i / 4, i / 3, i % 3 == 0, f"név-{i}" * (i % 4),
            bytes([i % 256, 0, 255]), dt.date(1970, 1, 1) + dt.timedelta(days=i - 20),
            epoch + dt.timedelta(seconds=i * 3600, microseconds=i),
            decimal.Decimal(f"{i}.{i % 100:02d}"), [i, i + 1, i + 2], [float(i)] * (i % 4),
            Vectors.dense([i, -i]), Vectors.sparse(5, [i % 5], [float(i)]),
            Vectors.sparse(1 << 20, [i, 1000 + i], [1.0, float(i)]),
        ))
    return spark.createDataFrame(rows, schema), epoch


def test_every_supported_type_arrives_with_exact_values(spark, tmp_path, shares):
    n = 40
    df, epoch = typed_frame(spark, n)
    feeds = spool_frames({"train": sparse_vectors(df, "sparse")}, 2, tmp_path, shares)
    info = feeds["train"]
    assert info.total_rows == n and sorted(info.rows) == [20, 20]
    kinds = {c.name: (c.kind, c.dtype) for c in info.columns}
    assert kinds["day"] == ("scalar", "int64") and kinds["ts"] == ("scalar", "int64")
    assert kinds["sparse"] == ("sparse", "float64") and kinds["svec"] == ("list", "float64")

    got = read_all(feeds, shuffle=False, batch_size=7)
    order = np.argsort(np.concatenate([t.numpy() for t in got["id"]]))

    def col(name):
        return np.concatenate([t.numpy() for t in got[name]])[order]

    ids = np.arange(n)
    assert got["i8"][0].dtype.name == "int8" and got["f32"][0].dtype.name == "float32"
    np.testing.assert_array_equal(col("i8"), ids % 100 - 50)
    np.testing.assert_array_equal(col("i16"), ids * 7 - 300)
    np.testing.assert_array_equal(col("i32"), ids * 1000)
    np.testing.assert_array_equal(col("f32"), (ids / 4).astype(np.float32))
    np.testing.assert_array_equal(col("f64"), ids / 3)
    np.testing.assert_array_equal(col("flag"), ids % 3 == 0)
    assert [s.decode() for s in col("name")] == [f"név-{i}" * (i % 4) for i in ids]
    assert list(col("blob")) == [bytes([i % 256, 0, 255]) for i in ids]
    np.testing.assert_array_equal(col("day"), ids - 20)  # days since 1970-01-01
    np.testing.assert_array_equal(col("ts"), ids * 3600 * 10**6 + ids)  # µs since epoch, UTC
    np.testing.assert_allclose(col("money"), [float(f"{i}.{i % 100:02d}") for i in ids])
    fixed = col("fixed")
    assert fixed.shape == (n, 3)
    np.testing.assert_array_equal(fixed, np.stack([ids, ids + 1, ids + 2], 1))
    var = col("var")
    assert var.shape == (n, 3)  # padded with zeros to the longest list
    for i in ids:
        np.testing.assert_array_equal(var[i], [float(i)] * (i % 4) + [0.0] * (3 - i % 4))
    np.testing.assert_array_equal(col("dvec"), np.stack([ids, -ids], 1))
    svec = col("svec")  # an undeclared sparse vector: densified by Spark
    assert svec.shape == (n, 5)
    np.testing.assert_array_equal(svec[ids, ids % 5], ids)
    assert np.count_nonzero(svec) == np.count_nonzero(ids)

    # Declared sparse: tf.SparseTensor [batch, 2**20] holding only the stored entries.
    import tensorflow as tf

    spec = context(feeds).dataset_fn(features=["sparse"], repeat=False)().element_spec["sparse"]
    assert isinstance(spec, tf.SparseTensorSpec) and spec.shape.as_list() == [None, 1 << 20]
    assert spec.dtype == tf.float64 and isinstance(got["sparse"][0], tf.SparseTensor)
    seen = {}
    for id_batch, st in zip(got["id"], got["sparse"]):
        assert int(st.dense_shape[1]) == 1 << 20
        for (r, c), v in zip(st.indices.numpy(), st.values.numpy()):
            seen.setdefault(int(id_batch[r]), []).append((int(c), float(v)))
    assert seen == {i: [(i, 1.0), (1000 + i, float(i))] for i in range(n)}
    # The spool holds the sparse entries, not 2**20 doubles per row.
    assert sum(os.path.getsize(os.path.join(d, f)) for d in info.dirs for f in os.listdir(d)) < 1 << 20


def test_ragged_lists_and_densified_sparse_vectors(spark, tmp_path, shares):
    df, _ = typed_frame(spark, 12)
    feeds = spool_frames({"train": sparse_vectors(df.select("id", "var", "sparse"), "sparse")}, 1,
                         tmp_path, shares)
    ds = context(feeds).dataset_fn(ragged=True, shuffle=False, batch_size=12, features=["id", "var"],
                                   repeat=False)()
    (batch,) = list(ds)
    assert batch["var"].to_list() == [[float(i)] * (i % 4) for i in range(12)]
    small = spool_frames({"train": sparse_vectors(
        spark.createDataFrame(*_small_sparse()), "v")}, 1, tmp_path / "small", shares)
    (batch,) = list(context(small).dataset_fn(dense=["v"], shuffle=False, batch_size=8,
                                                     repeat=False)())
    np.testing.assert_array_equal(batch["v"].numpy(), [[0, 2.5, 0, 0], [1, 0, 0, 3], [0, 0, 0, 0]])


def _multi_valued(spark, n):
    """``tags`` array<string> and ``items`` array<bigint> as multi-valued categorical features:
    id % 4 tags, id % 3 items; every 5th tags row null, every 9th row's second tag null."""
    from pyspark.sql import functions as F

    i = F.col("id")
    tag2 = F.when(i % 9 == 0, None).otherwise(F.concat(F.lit("u"), (i % 7).cast("string")))
    tags = F.slice(F.array(F.concat(F.lit("t"), i.cast("string")), tag2, F.lit("same")), 1, (i % 4).cast("int"))
    tags = F.when(i % 5 == 0, None).otherwise(F.when(i % 4 == 3, F.array_append(tags, F.lit("é"))).otherwise(tags))
    items = F.slice(F.array(i, i * 2, i * 3), 1, (i % 3).cast("int"))
    return spark.range(n, numPartitions=3).select("id", tags.alias("tags"), items.alias("items"))


def _want_tags(i: int, fill: str | None) -> list:
    if i % 5 == 0:
        return []
    tags = [f"t{i}", None if i % 9 == 0 else f"u{i % 7}", "same"][:i % 4] + (["é"] if i % 4 == 3 else [])
    return [fill if t is None else t for t in tags]


def test_multi_valued_string_and_integer_columns_arrive_exactly_once(spark, tmp_path, shares):
    """array<string> and array<bigint>: each row's values, in order, exactly once over the workers;
    empty lists stay empty, a null row is empty and a null element takes its fill value; ragged,
    or padded with empty strings and zeros."""
    n = 400
    feeds = spool_frames({"train": _multi_valued(spark, n)}, 2, tmp_path, shares, chunk_rows=64)
    info = feeds["train"]
    assert [c.kind for c in info.columns] == ["scalar", "strings", "list"]
    assert info.nulls["tags"] == n // 5 + sum(1 for i in range(n) if i % 9 == 0 and i % 5 and i % 4 >= 2)
    with pytest.raises(FeedError, match=r"has nulls in tags \(\d+ nulls\)"):
        context(feeds).dataset_fn()
    got = read_all(feeds, fill={"tags": "?"}, ragged=True, shuffle=True, seed=3, batch_size=50)
    ids = [i for t in got["id"] for i in t.numpy().tolist()]
    tags = [r for t in got["tags"] for r in t.to_list()]
    items = [r for t in got["items"] for r in t.to_list()]
    assert sorted(ids) == list(range(n))  # every row once, over both workers
    for i, tag_row, item_row in zip(ids, tags, items):
        assert [t.decode() for t in tag_row] == _want_tags(i, "?"), i
        assert item_row == [i, 2 * i, 3 * i][:i % 3], i
    padded = read_all(feeds, fill={"tags": "?"}, shuffle=False, batch_size=64)
    widths = {t.shape[1] for t in padded["tags"]}
    assert widths == {4}  # the longest row of the dataset: 3 tags and "é"
    first = dict(zip(np.concatenate([t.numpy() for t in padded["id"]]).tolist(),
                     np.concatenate([t.numpy() for t in padded["tags"]]).tolist()))
    assert [t.decode() for t in first[7]] == _want_tags(7, "?")  # 3 tags and "é": no padding
    assert [t.decode() for t in first[1]] == ["t1", "", "", ""]  # padded with empty strings


def _small_sparse():
    from pyspark.ml.linalg import Vectors

    return ([(0, Vectors.sparse(4, [1], [2.5])), (1, Vectors.dense([1, 0, 0, 3])),
             (2, Vectors.sparse(4, [], []))], ["id", "v"])


def test_unsupported_types_fail_before_any_spark_job_naming_column_and_type(spark):
    from pyspark.sql import functions as F

    df = spark.range(3).select(
        "id", F.create_map(F.lit("k"), F.col("id")).alias("attrs"),
        F.struct(F.col("id").alias("a")).alias("pair"),
        F.col("id").cast("decimal(38,10)").alias("amount"),
        F.array(F.array(F.col("id").cast("string"))).alias("nested"),
        F.array(F.col("id").cast("string")).alias("tags"))
    sc = spark.sparkContext
    sc.setJobGroup("unsupported-check", "no job may run")
    try:
        with pytest.raises(FeedError) as err:
            plan_feed({"train": df}, 2)
        assert sc.statusTracker().getJobIdsForGroup("unsupported-check") == []
    finally:
        sc.setJobGroup("other", "")
    text = str(err.value)
    for needle in ("attrs (map<string,bigint>", "pair (struct<a:bigint>", "amount (decimal(38,10)",
                   "nested (array<array<string>>"):
        assert needle in text, text
    assert "id (" not in text and "tags (" not in text  # array<string> is fed


def test_nulls_are_named_with_counts_and_fill_replaces_them(spark, tmp_path, shares):
    from pyspark.sql import functions as F

    df = spark.range(100).select(
        "id", F.when(F.col("id") % 10 == 0, None).otherwise(F.col("id") * 1.5).alias("x"),
        F.when(F.col("id") < 7, None).otherwise(F.col("id") % 2 == 0).alias("b"),
        F.when(F.col("id") == 3, None).otherwise(F.col("id").cast("string")).alias("s"))
    feeds = spool_frames({"train": df}, 2, tmp_path, shares)
    with pytest.raises(FeedError) as err:
        context(feeds).dataset_fn()
    assert "b (7 nulls), s (1 nulls), x (10 nulls)" in str(err.value)
    assert "fill=" in str(err.value)
    # Fill only what is used: without s, x and b need a value; job-level fill covers b.
    ctx_fill = {"b": True}
    got = {}
    for w in range(2):
        ctx = context(feeds, worker=w, fill=ctx_fill)
        for batch in ctx.dataset_fn(features=["id", "x", "b"], fill={"x": -1.0}, shuffle=False,
                                    repeat=False)():
            for k, v in batch.items():
                got.setdefault(k, []).extend(v.numpy().tolist())
    by_id = {i: (x, b) for i, x, b in zip(got["id"], got["x"], got["b"])}
    assert len(by_id) == 100
    for i, (x, b) in by_id.items():
        assert x == (-1.0 if i % 10 == 0 else i * 1.5)
        assert b == (True if i < 7 else i % 2 == 0)


def test_fill_in_array_columns(spark, tmp_path, shares):
    from pyspark.sql import functions as F

    # fixed: width 3, a null row every 5th id, a null element every 7th; var: length id % 3,
    # a null row every 4th id, its first element null every 6th.
    elem = F.when(F.col("id") % 7 == 0, None).otherwise(F.col("id").cast("float"))
    var_first = F.when(F.col("id") % 6 == 0, None).otherwise(F.lit(1.0))
    df = spark.range(60).select(
        "id",
        F.when(F.col("id") % 5 == 0, None).otherwise(F.array(elem, F.lit(1.0), F.lit(2.0))).alias("fixed"),
        F.when(F.col("id") % 4 == 0, None).otherwise(
            F.slice(F.array(var_first, F.lit(2.0), F.lit(3.0)), 1, F.col("id") % 3)).alias("var"))
    feeds = spool_frames({"train": df}, 2, tmp_path, shares, chunk_rows=16)
    with pytest.raises(FeedError, match=r"fixed \(\d+ nulls\), var \(\d+ nulls\)"):
        context(feeds).dataset_fn()
    got = read_all(feeds, fill={"fixed": -1.0, "var": -9.0}, shuffle=False, batch_size=8)
    ids = np.concatenate([t.numpy() for t in got["id"]])
    fixed = np.concatenate([t.numpy() for t in got["fixed"]])
    var = np.concatenate([t.numpy() for t in got["var"]])
    assert sorted(ids.tolist()) == list(range(60)) and fixed.shape == (60, 3) and var.shape == (60, 2)
    for i, f, v in zip(ids, fixed, var):
        if i % 5 == 0:
            assert f.tolist() == [-1.0, -1.0, -1.0]
        else:
            assert f.tolist() == [-1.0 if i % 7 == 0 else float(i), 1.0, 2.0]
        want = [] if i % 4 == 0 else [-9.0 if i % 6 == 0 else 1.0, 2.0][:i % 3]
        assert v.tolist() == want + [0.0] * (2 - len(want))  # padding is zeros, not the fill


def test_exactly_once_per_epoch_with_shuffle_across_workers(spark, tmp_path, shares):
    n, workers, epochs = 30_000, 3, 3
    feeds = spool_frames({"train": spark.range(n, numPartitions=5)}, workers, tmp_path, shares,
                         chunk_rows=1000)
    info = feeds["train"]
    assert info.total_rows == n and all(c >= 10 for c in info.chunks)
    seen = ids_per_worker(feeds, epochs, batch_size=96, shuffle=True, seed=7)
    all_ids = Counter()
    for w in range(workers):
        first = Counter(seen[w][0])
        assert len(seen[w][0]) == info.rows[w] and max(first.values()) == 1
        for e in range(1, epochs):
            assert Counter(seen[w][e]) == first, f"worker {w} epoch {e} saw different rows"
            assert seen[w][e] != seen[w][0], "shuffle did not change the order between epochs"
        all_ids.update(first)
    assert all_ids == Counter(range(n))  # each row on exactly one worker
    # Without shuffling the order is the spool's own, and the same every epoch.
    plain = ids_per_worker(feeds, 2, batch_size=96, shuffle=False)
    for w in range(workers):
        assert plain[w][0] == plain[w][1] and Counter(plain[w][0]) == Counter(seen[w][0])


def test_a_larger_shuffle_buffer_mixes_rows_across_chunks_and_keeps_epochs_whole(spark, tmp_path, shares):
    """Sorted input, 100-row chunks: by default a run of 100 rows comes from one chunk; with
    ``shuffle_buffer=400`` rows of four chunks mix, and still each epoch holds every row once."""
    feeds = spool_frames({"train": spark.range(1_000, numPartitions=1)}, 1, tmp_path, shares, chunk_rows=100)
    assert feeds["train"].chunks == [10]

    def chunks_per_run(stream):  # chunks met in each run of 100 rows (ids are spooled in order)
        return [len({i // 100 for i in stream[k:k + 100]}) for k in range(0, len(stream), 100)]

    plain = ids_per_worker(feeds, 2, batch_size=50, shuffle=True, seed=3)[0]
    assert all(n == 1 for e in plain for n in chunks_per_run(e))
    mixed = ids_per_worker(feeds, 3, batch_size=50, shuffle=True, seed=3, shuffle_buffer=400)[0]
    for epoch in mixed:
        assert Counter(epoch) == Counter(range(1_000))  # a window never spans two epochs
        assert min(chunks_per_run(epoch)) >= 2 and max(chunks_per_run(epoch)) <= 4
    assert mixed[0] != mixed[1]
    # A seed replays the same orders in every new iterator (and only a seed does), both ways.
    for extra in ({}, {"shuffle_buffer": 400}):
        again = ids_per_worker(feeds, 2, batch_size=50, shuffle=True, seed=3, **extra)[0]
        assert again == ids_per_worker(feeds, 2, batch_size=50, shuffle=True, seed=3, **extra)[0]
        assert again != ids_per_worker(feeds, 2, batch_size=50, shuffle=True, **extra)[0]
    with pytest.raises(FeedError, match="shuffle_buffer must be a number of rows"):
        context(feeds).dataset_fn(shuffle_buffer=0)


@pytest.mark.parametrize("layout", ["one-partition", "99-percent-in-one"])
def test_skewed_input_is_balanced_within_one_batch(spark, tmp_path, shares, layout):
    n, workers, batch = 20_001, 4, 64
    if layout == "one-partition":
        df = spark.range(n, numPartitions=1)
    else:
        big = spark.range(0, 19_801, numPartitions=1)
        df = big.union(spark.range(19_801, n, numPartitions=8))
    feeds = spool_frames({"train": df}, workers, tmp_path, shares)
    rows = feeds["train"].rows
    # Exact shares: workers differ by at most one row, far below one batch.
    assert sum(rows) == n and max(rows) - min(rows) <= 1
    per = [math.ceil(r / batch) for r in rows]
    assert context(feeds, mode="ps").steps_per_epoch(batch) == sum(per)
    assert context(feeds).steps_per_epoch(batch) == max(per)
    # Every worker's dataset has exactly its share of batches.
    for w in range(workers):
        got = sum(1 for _ in context(feeds, worker=w).dataset_fn(features=["id"], batch_size=batch,
                                                                 repeat=False)())
        assert got == per[w]


def test_many_ragged_partitions_are_dealt_to_within_one_row(spark, tmp_path, shares):
    from pyspark.sql import functions as F

    workers = 4
    sizes = np.random.default_rng(5).integers(0, 121, 160)
    # Partition p holds ids [start_p, start_p + size_p): one input partition per slice.
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    slices = spark.sparkContext.parallelize([(int(a), int(b)) for a, b in zip(starts, sizes)], 160)
    df = (spark.createDataFrame(slices, "a long, n long").where("n > 0")
          .select(F.explode(F.sequence("a", F.col("a") + F.col("n") - 1)).alias("id")))
    n = int(sizes.sum())
    assert df.rdd.getNumPartitions() == 160
    feeds = spool_frames({"train": df}, workers, tmp_path, shares)
    rows = feeds["train"].rows
    assert sum(rows) == n and set(rows) <= {n // workers, n // workers + 1}, rows
    got = read_all(feeds, features=["id"], shuffle=False)
    assert sorted(np.concatenate([t.numpy() for t in got["id"]]).tolist()) == list(range(n))
    # A control, not a test of Spark: on this input Spark's own round-robin misses an even split by
    # several rows, so the exact split asserted above is elearn's dealing, not the input's shape.
    rr = df.repartition(workers).groupBy(F.spark_partition_id()).count().collect()
    assert max(r["count"] for r in rr) - min(r["count"] for r in rr) > 2


def test_share_keys_land_where_sparks_hash_partitioner_puts_them(spark):
    """The keys are computed without Spark: each must go to its worker's partition in Spark itself."""
    from pyspark.sql import functions as F

    from elearn.feed.shares import share_keys

    for workers in (1, 2, 3, 7, 16, 61):
        keys = share_keys(workers)
        got = spark.createDataFrame([(k,) for k in keys], "k bigint").repartition(workers, "k") \
            .select("k", F.spark_partition_id().alias("p")).collect()
        assert {r.k: r.p for r in got} == {k: w for w, k in enumerate(keys)}, workers


def test_a_rerun_partition_deals_its_rows_as_the_first_attempt_did(spark, shares):
    """A map task Spark reruns (executor loss) sees its rows in another order; it must still send
    each row to the same worker, or that row would be fed twice and another never."""
    from pyspark.sql import functions as F

    from elearn.feed.shares import KEY, deal, share_keys

    workers = 3
    keys = share_keys(workers)
    assert len(set(keys)) == workers
    src = spark.range(0, 1_000, numPartitions=5).select("id", (F.col("id") % 7).alias("g"))

    def dealt(df):
        out = deal(df, "train", workers, keys, shares).select(F.spark_partition_id().alias("p"), "id", KEY)
        return {(r.p, r.id): r[KEY] for r in out.collect()}

    def reversed_rows(batches):  # a Python pass, so the optimizer cannot drop the reordering
        import pyarrow as pa

        table = pa.Table.from_batches(list(batches))
        yield from table.take(list(range(table.num_rows - 1, -1, -1))).to_batches()

    # Arrow batches of 7 rows: blocks of 3 straddle batches, as they do in 10,000-row batches.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "7")
    try:
        first = dealt(src)
        # The same partitions, each with its rows in reverse order, dealt again.
        again = dealt(src.mapInArrow(reversed_rows, src.schema))
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    assert len(first) == 1_000 and sorted(i for _, i in first) == list(range(1_000))
    assert first == again
    counts = Counter(first.values())
    assert set(counts) == set(keys) and max(counts.values()) - min(counts.values()) <= 1


def test_several_named_dataframes_each_fed_by_name(spark, tmp_path, shares):
    from pyspark.sql import functions as F

    train = spark.range(500).select("id", (F.col("id") * 2.0).alias("y"))
    val = spark.range(1000, 1120).select("id", F.col("id").cast("string").alias("tag"),
                                         (F.col("id") % 2 == 0).alias("y"))
    feeds = spool_frames({"train": train, "validation": val}, 2, tmp_path, shares)
    assert sorted(feeds) == ["train", "validation"]
    ctx = context(feeds)
    assert ctx.rows("train") == 500 and ctx.rows("validation") == 120
    got = read_all(feeds, "validation", label="y", shuffle=False)
    ids = np.concatenate([t.numpy() for t in got["id"]])
    assert sorted(ids.tolist()) == list(range(1000, 1120))
    tags = np.concatenate([t.numpy() for t in got["tag"]])
    assert [t.decode() for t in tags] == [str(i) for i in ids]
    with pytest.raises(FeedError, match="no dataset named 'test' was fed; fed: train, validation"):
        ctx.dataset_fn("test")
    with pytest.raises(FeedError, match="label 'nope' is not a column of 'train'"):
        ctx.dataset_fn(label="nope")


def test_nothing_fed_says_so():
    ctx = context({}, workers=2)
    for call in (lambda: ctx.dataset(), lambda: ctx.dataset_fn(), lambda: ctx.rows(),
                 lambda: ctx.steps_per_epoch(32)):
        with pytest.raises(FeedError, match="nothing was fed: pre_train returned None"):
            call()


def test_sparse_vectors_rejects_non_vector_columns(spark):
    df = spark.range(3)
    with pytest.raises(FeedError, match="column 'id' is bigint, not an ML Vector"):
        sparse_vectors(df, "id")
    with pytest.raises(FeedError, match="no column 'v'"):
        sparse_vectors(df, "v")


def test_a_partition_failing_half_way_leaves_no_spool(tmp_path):
    import pyarrow as pa

    from elearn.feed.columns import FeedPlan
    from elearn.feed.partition import spool_dir, spool_partition

    plan = FeedPlan(["train"], {"train": [{"name": "x", "kind": "scalar", "dtype": "float32",
                                           "source": "float"}]})

    def batches():
        yield pa.record_batch([pa.array(np.ones(70_000, np.float32))], names=["x"])
        raise RuntimeError("upstream stage failed")

    with pytest.raises(RuntimeError, match="upstream stage failed"):
        spool_partition(batches(), plan, str(tmp_path), 0)
    assert not os.path.exists(spool_dir(str(tmp_path), "train", 0))


# -- the spool's blocks, written and read without Spark --------------------------------------------
STRINGS = ["", "a", "név", "日本語 ✓", None, "x" * 40, "", "🙂"]
# With chunks of 4 rows: rows 0-3 all hold two values (a fixed-width chunk), rows 4-7 vary.
MIXED = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0], [], [9.0], None, [10.0, 11.0, 12.0]]


def _encoding_table(n=8):
    import pyarrow as pa

    return pa.table({
        "id": pa.array(range(n), pa.int64()),
        "s": pa.array(STRINGS[:n], pa.string()),
        "blob": pa.array([bytes([i, 0, 255]) * i for i in range(n)], pa.binary()),
        "mixed": pa.array(MIXED[:n], pa.list_(pa.float32())),
        "fixed": pa.array([[i, -i] for i in range(n)], pa.list_(pa.int64())),
    })


def _encoding_columns():
    from elearn.feed.columns import FeedColumn

    return [FeedColumn("id", "scalar", "int64", "bigint"), FeedColumn("s", "string", "object", "string"),
            FeedColumn("blob", "string", "object", "binary"),
            FeedColumn("mixed", "list", "float32", "array<float>"),
            FeedColumn("fixed", "list", "int64", "array<bigint>")]


def _spool(directory, table, chunk_rows=4):
    from elearn.feed.spool import SpoolWriter

    writer = SpoolWriter(str(directory), _encoding_columns(), chunk_rows)
    for batch in table.to_batches():  # one batch: each chunk is a slice of it, at an offset
        writer.write(batch)
    return writer.close()


def _read(directory, meta, **kwargs):
    """Every row of the spool in one batch, as numpy/lists."""
    from elearn.feed.reader import spool_dataset

    ds = spool_dataset(str(directory), meta["chunks"], _encoding_columns(), batch_size=1 << 20,
                       list_lengths=meta["list_lengths"], **kwargs)
    batches = list(ds)
    assert len(batches) <= 1
    return batches[0] if batches else None


def test_spool_blocks_round_trip_strings_and_fixed_and_mixed_arrays_exactly(tmp_path):
    meta = _spool(tmp_path, _encoding_table())
    assert meta["rows"] == 8 and meta["chunks"] == 2
    assert meta["nulls"] == {"id": 0, "s": 1, "blob": 0, "mixed": 1, "fixed": 0}
    assert meta["list_lengths"] == {"mixed": [0, 3], "fixed": [2, 2]}

    got = _read(tmp_path, meta, shuffle=False, ragged=True, fill={"s": "?", "mixed": -1.0})
    assert got["id"].numpy().tolist() == list(range(8))
    assert [v.decode() for v in got["s"].numpy()] == ["?" if s is None else s for s in STRINGS]
    assert got["blob"].numpy().tolist() == [bytes([i, 0, 255]) * i for i in range(8)]
    assert got["mixed"].to_list() == [row or [] for row in MIXED]  # a null row is empty
    np.testing.assert_array_equal(got["fixed"].numpy(), [[i, -i] for i in range(8)])
    assert got["fixed"].dtype.name == "int64" and got["mixed"].dtype.name == "float32"

    padded = _read(tmp_path, meta, shuffle=False, fill={"s": "?"})["mixed"].numpy()
    np.testing.assert_array_equal(padded, [(row or []) + [0.0] * (3 - len(row or [])) for row in MIXED])

    # On disk: a list column's shape block is one int64 (the width) in a chunk whose rows all have
    # the same length, row splits otherwise. Blocks: id 0-1, s 2-4, blob 5-7, mixed 8-11, fixed 12-15.
    headers = [np.fromfile(os.path.join(str(tmp_path), f"chunk-{k:06d}.spool"), "<i8", count=17)
               for k in range(2)]
    assert [h[0] for h in headers] == [4, 4]
    assert headers[0][1 + 9] == 8 and headers[1][1 + 9] == 8 * 5  # mixed: [2], then 5 splits
    assert headers[0][1 + 13] == headers[1][1 + 13] == 8           # fixed: [2] in both chunks
    # A string column is its offsets (n + 1 int64) and its bytes, nothing else.
    assert headers[0][1 + 2] == 8 * 5
    assert headers[0][1 + 3] == sum(len((s or "").encode()) for s in STRINGS[:4])


def test_shuffled_spool_rows_keep_their_strings_and_arrays(tmp_path):
    meta = _spool(tmp_path, _encoding_table(), chunk_rows=4)
    got = _read(tmp_path, meta, shuffle=True, seed=3, ragged=True, fill={"s": "?"})
    ids = got["id"].numpy().tolist()
    assert sorted(ids) == list(range(8)) and ids != list(range(8))
    for k, i in enumerate(ids):
        assert got["s"][k].numpy().decode() == ("?" if STRINGS[i] is None else STRINGS[i])
        assert got["blob"][k].numpy() == bytes([i, 0, 255]) * i
        assert got["mixed"][k].numpy().tolist() == (MIXED[i] or [])
        assert got["fixed"][k].numpy().tolist() == [i, -i]


def test_empty_spool_and_a_chunk_of_empty_strings_read_back(tmp_path):
    import pyarrow as pa

    from elearn.feed.spool import SpoolWriter

    writer = SpoolWriter(str(tmp_path / "empty"), _encoding_columns())
    meta = writer.close()
    assert meta["rows"] == 0 and meta["chunks"] == 1  # one empty chunk keeps readers uniform
    assert _read(tmp_path / "empty", meta, shuffle=True) is None

    table = pa.table({"id": pa.array([0, 1, 2], pa.int64()), "s": pa.array(["", "", ""]),
                      "blob": pa.array([b"", b"", b""]),
                      "mixed": pa.array([[], [], []], pa.list_(pa.float32())),
                      "fixed": pa.array([[1, 2], [3, 4], [5, 6]], pa.list_(pa.int64()))})
    meta = _spool(tmp_path / "blank", table)
    got = _read(tmp_path / "blank", meta, shuffle=False, ragged=True)
    assert got["s"].numpy().tolist() == [b""] * 3 and got["blob"].numpy().tolist() == [b""] * 3
    assert got["mixed"].shape == (3, 0)  # every array of the dataset is empty: width 0
    np.testing.assert_array_equal(got["fixed"].numpy(), [[1, 2], [3, 4], [5, 6]])


ARRAYS = r"""
import json, sys
import numpy as np, pyarrow as pa
from elearn.feed.arrays import from_numpy, from_strings, to_numpy, valid_mask
out = [from_strings(["a", "", "\u00fc{}"]).to_pylist()]
for values in (np.arange(11, dtype=np.int64) * 3, np.linspace(-1, 1, 13).astype(np.float32),
               np.arange(11) % 3 == 1, np.zeros(0, np.int32)):
    arr = from_numpy(values)
    out.append([str(arr.type), to_numpy(arr).tolist(), to_numpy(arr[3:9]).tolist()])
# int32 with nulls at every third place, sliced at an odd offset
validity = from_numpy(np.arange(10) % 3 != 0).buffers()[1]
holes = pa.Array.from_buffers(pa.int32(), 10, [validity, from_numpy(np.arange(10, dtype=np.int32) + 5).buffers()[1]])[1:]
out.append([str(holes.type), to_numpy(holes).tolist(), valid_mask(holes).tolist()])
print(json.dumps({"pandas": "pandas" in sys.modules, "out": out}))
"""


def test_arrays_from_and_to_numpy_equal_pyarrows_own_and_never_import_pandas():
    """The feed's dealing and spooling convert without pyarrow's pandas import (0.3-0.8 CPU-s in
    every Spark Python worker at the start of a run): same values as ``pa.array``, ``fill_null``
    and ``to_numpy``, for slices and nulls too, with pandas still unloaded after all of them."""
    import pyarrow as pa

    run = subprocess.run([sys.executable, "-c", ARRAYS], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["pandas"] is False
    want = [["a", "", "\u00fc{}"]]
    for values in (np.arange(11, dtype=np.int64) * 3, np.linspace(-1, 1, 13).astype(np.float32),
                   np.arange(11) % 3 == 1, np.zeros(0, np.int32)):
        arr = pa.array(values)
        want.append([str(arr.type), arr.to_numpy(zero_copy_only=False).tolist(),
                     arr[3:9].to_numpy(zero_copy_only=False).tolist()])
    holes = pa.array([None if i % 3 == 0 else i + 5 for i in range(10)], pa.int32())[1:]
    want.append(["int32", holes.fill_null(0).to_numpy().tolist(),
                 holes.is_valid().to_numpy(zero_copy_only=False).tolist()])
    assert got["out"] == want
