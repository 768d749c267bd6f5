"""Allreduce mode in process: per-worker datasets over real spools and TF readers, checkpoint
restore on non-chief workers, option checks. No cluster.

Uneven partitions must give every worker the same number of steps per epoch (a worker that runs
out first would leave the others waiting in the collective), and nothing may be dropped.
"""
from __future__ import annotations

import math

import pyarrow as pa
import pytest

from elearn import SparkTFJob
from elearn.train.context import TrainContext
from elearn.errors import FeedError
from elearn.driver.options import SubmitOptions
from elearn.mpi import AllreduceBackend
from elearn.ps import PSBackend
from elearn.feed.columns import FeedInfo, FeedPlan
from elearn.feed.columns import FeedColumn
from elearn.feed.partition import spool_partition

HEARTBEAT = SubmitOptions().heartbeat_timeout  # --heartbeat-timeout's default

COLUMNS = [FeedColumn("id", "scalar", "int64", "bigint").to_dict(),
           FeedColumn("x", "scalar", "float32", "float").to_dict()]


def spool(tmp_path, sizes):
    """Spool worker ``w`` ``sizes[w]`` rows with consecutive ids; returns ``{"train": FeedInfo}``."""
    plan = FeedPlan(["train"], {"train": COLUMNS})
    metas, start = [], 0
    for w, n in enumerate(sizes):
        ids = list(range(start, start + n))
        start += n
        batch = pa.RecordBatch.from_pydict({"id": pa.array(ids, pa.int64()),
                                            "x": pa.array([float(i) for i in ids], pa.float32())})
        metas.append(spool_partition([batch] if n else [], plan, str(tmp_path), w)["train"])
    return {"train": FeedInfo.gather("train", plan, metas)}


def context(feeds, worker, workers):
    import tensorflow as tf

    return TrainContext(strategy=tf.distribute.get_strategy(), _backend=AllreduceBackend(workers, HEARTBEAT),
                        task_type="worker", task_index=worker, num_workers=workers, num_ps=0,
                        checkpoint_dir="", model_dir="", log_dir="", args={}, feeds=feeds)


def test_skewed_partitions_give_every_worker_the_same_steps_and_drop_nothing(tmp_path):
    sizes, batch = [700, 37, 129], 32
    feeds = spool(tmp_path, sizes)
    steps = max(math.ceil(n / batch) for n in sizes)
    assert context(feeds, 0, 3).steps_per_epoch(batch) == steps == 22
    start = 0
    for w, n in enumerate(sizes):
        ds = context(feeds, w, 3).dataset(features=["id"], batch_size=batch, repeat=False, seed=w)
        batches = [b["id"].numpy().tolist() for b in ds]
        assert len(batches) == steps, f"worker {w} ran {len(batches)} steps, not {steps}"
        # Full batches only: the stream wraps around instead of ending with a short batch.
        assert all(len(b) == batch for b in batches)
        seen = [i for b in batches for i in b]
        assert set(seen) == set(range(start, start + n)), f"worker {w} lost or gained rows"
        start += n


def test_endless_stream_keeps_the_step_count_across_epochs(tmp_path):
    feeds = spool(tmp_path, [100, 10])
    ds = context(feeds, 1, 2).dataset(features=["id"], batch_size=8)
    it = iter(ds)
    ids = [i for _ in range(3 * context(feeds, 1, 2).steps_per_epoch(8)) for i in next(it)["id"].numpy()]
    assert len(ids) == 3 * 13 * 8 and set(ids) == set(range(100, 110))


@pytest.mark.parametrize("backend", [AllreduceBackend(2, HEARTBEAT), PSBackend(1)])
def test_a_worker_without_rows_is_named(tmp_path, backend):
    """Its dataset would never yield a batch: fit (PS) or the collective (allreduce) would wait."""
    import dataclasses

    feeds = spool(tmp_path, [5, 0])
    ctx = dataclasses.replace(context(feeds, 0, 2), _backend=backend)
    with pytest.raises(FeedError, match=r"worker\(s\) 1 received no rows of 'train' \(5 rows over 2 workers\)"):
        ctx.dataset_fn(batch_size=4)


def test_every_worker_restores_the_chiefs_checkpoint_and_only_the_chief_keeps_saves(tmp_path):
    """The contexts are the ones the training process builds: where each worker saves and what
    it restores is decided by the mode, not by this test."""
    import tensorflow as tf

    from elearn.feed.columns import FeedPlan
    from elearn.train.trainer import make_context
    from elearn.specs import Attempt, TrainSpec

    chief_dir = tmp_path / "checkpoints"
    spec = TrainSpec(job=b"", backend=AllreduceBackend(2, HEARTBEAT), num_workers=2, num_ps=0,
                     plan=FeedPlan([], {}), checkpoint_uri=str(chief_dir),
                     model_uri=str(tmp_path / "model"), log_dir=str(tmp_path / "tb"),
                     app_dir=str(tmp_path))

    def ctx(index):
        attempt = Attempt(index=index, number=1, feeds={}, result=str(tmp_path / f"r{index}"),
                          staging=str(tmp_path / f"staging-{index}"),
                          scratch=str(tmp_path / f"scratch-{index}") if index else None)
        return make_context(spec, attempt, tf.distribute.get_strategy(), None, SparkTFJob())

    weight = tf.Variable(5.0)
    ctx(0).checkpoint(weight=weight, every_steps=10).save(10)
    mine = tf.Variable(0.0)
    worker = ctx(1)
    ckpt = worker.checkpoint(weight=mine, every_steps=10)
    assert ckpt.step == 10 and float(mine.numpy()) == 5.0
    mine.assign(7.0)
    ckpt.save(20)
    assert tf.train.latest_checkpoint(str(chief_dir)).endswith("ckpt-10")  # the chief's, untouched
    assert tf.train.latest_checkpoint(worker.checkpoint_dir).endswith("ckpt-20")
    assert worker.checkpoint_dir.startswith(str(tmp_path / "scratch-1"))
