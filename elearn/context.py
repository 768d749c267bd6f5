"""``TrainContext``: everything the cluster decided, handed to the user's ``train(ctx)``."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from elearn.errors import FeedError
from elearn.feed import FeedInfo


@dataclass
class TrainContext:
    """What ``train(ctx)`` gets.

    Attributes:
        strategy: the ``tf.distribute`` strategy to build the model under (``ctx.strategy.scope()``).
        mode: ``"ps"`` (ParameterServerStrategy, ``train`` runs in a coordinator process on the
            driver host, TF's chief) or ``"allreduce"`` (MultiWorkerMirroredStrategy, ``train``
            runs in every worker's TF process).
        task_type, task_index, is_chief: this process's place in the cluster.
        num_workers, num_ps: the cluster's size.
        checkpoint_dir, model_dir, log_dir: where checkpoints, the exported model and TensorBoard
            logs go (shared by all restarts of the application).
        args: the job's ``--arg`` values.
        coordinator: PS mode's ``ClusterCoordinator`` (None in allreduce mode).
        keras: the Keras module that trains in this mode (``tf_keras`` in PS mode).
    """

    strategy: Any
    mode: str
    task_type: str
    task_index: int
    num_workers: int
    num_ps: int
    checkpoint_dir: str
    model_dir: str
    log_dir: str
    args: dict
    coordinator: Any = None
    keras: Any = None
    feeds: dict = field(default_factory=dict)       # name -> FeedInfo
    fill: dict = field(default_factory=dict)         # job-level null fills
    local_worker: int | None = None                  # allreduce: this worker's own spool index
    chief_checkpoint_dir: str | None = None          # allreduce: where every worker restores from
    events: Any = None                               # callable(kind, **fields) -> events file
    metrics_path: str | None = None                  # where report() keeps metrics for the summary

    @property
    def is_chief(self) -> bool:
        return self.task_type == "chief" or (self.mode == "allreduce" and self.task_index == 0)

    # -- progress -----------------------------------------------------------------------------
    def checkpoint(self, *, every_steps: int | None = None, every_seconds: float | None = None,
                   max_to_keep: int = 3, **objects):
        """A :class:`elearn.checkpoint.Checkpointer` over ``checkpoint_dir``, already restored.

        Pass what to track (model, optimizer, ...). After a restart it holds the latest checkpoint's
        values and ``.step``; resume from there::

            ckpt = ctx.checkpoint(model=model, optimizer=opt, every_steps=100)
            for step in range(ckpt.step, total_steps):
                ...
                ckpt.maybe_save(step + 1)

        In PS mode ``save`` first waits for every scheduled step (``coordinator.join()``), so a
        checkpoint never holds half a step. In allreduce mode every worker restores the chief's
        latest checkpoint; only the chief's saves are kept.
        """
        from elearn.checkpoint import Checkpointer

        if self.mode == "allreduce" and not self.is_chief and self.chief_checkpoint_dir:
            from elearn.mpi.backup import mirror_chief

            mirror_chief(self.chief_checkpoint_dir, self.checkpoint_dir)
        return Checkpointer(self.checkpoint_dir, objects, every_steps=every_steps,
                            every_seconds=every_seconds, max_to_keep=max_to_keep,
                            coordinator=self.coordinator, on_save=self._on_checkpoint)

    def report(self, step: int | None = None, **metrics) -> None:
        """Show training progress on the driver's console and keep it for the final summary::

            ctx.report(step=step, loss=float(loss), examples_per_sec=rate)
        """
        import json
        import time as _time

        if not self.is_chief:
            return
        values = {k: (float(v) if hasattr(v, "__float__") and not isinstance(v, (int, bool)) else v)
                  for k, v in metrics.items()}
        if self.metrics_path:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps({"time": _time.time(), "step": step, **values}) + "\n")
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        print(_time.strftime("[elearn %H:%M:%S] ") + (f"step {step}: " if step is not None else "") + shown,
              flush=True)

    def progress_callback(self, every_seconds: float = 10.0, batch_size: int | None = None):
        """A Keras callback (for ``ctx.keras``) that reports step, examples/s, loss and metrics.

        PS mode reports once per epoch (tf_keras allows no batch-level callbacks there); allreduce
        mode also every ``every_seconds``.
        """
        from elearn.progress import make_progress_callback

        return make_progress_callback(self, every_seconds, batch_size)

    def tensorboard_callback(self, **kwargs):
        """``ctx.keras.callbacks.TensorBoard`` writing to ``log_dir`` (see ``--tensorboard``)."""
        return self.keras.callbacks.TensorBoard(log_dir=self.log_dir, **kwargs)

    def _on_checkpoint(self, step, path, restored=False):
        if self.events is not None:
            self.events("restore" if restored else "checkpoint", step=int(step), path=path)

    # -- data ---------------------------------------------------------------------------------
    def _feed(self, name: str) -> FeedInfo:
        if not self.feeds:
            raise FeedError("nothing was fed: pre_train returned None, so train must read its own "
                            "data (for example tf.data.TFRecordDataset over files on shared storage)")
        if name not in self.feeds:
            raise FeedError(f"no dataset named {name!r} was fed; fed: {', '.join(sorted(self.feeds))}")
        return self.feeds[name]

    def rows(self, name: str = "train") -> int:
        """Rows fed in total (all workers) for dataset ``name``."""
        return self._feed(name).total_rows

    def steps_per_epoch(self, batch_size: int, name: str = "train") -> int:
        """Steps that cover dataset ``name`` once with ``batch_size`` rows per step per worker.

        PS mode: every step is one batch on one worker, so the sum of each worker's batch count.
        Allreduce mode: all workers step together, so the largest worker's batch count.
        """
        per_worker = [math.ceil(r / batch_size) for r in self._feed(name).rows]
        return max(1, sum(per_worker) if self.mode == "ps" else max(per_worker))

    def dataset_fn(self, name: str = "train", *, label: str | None = None, features=None,
                   batch_size: int = 32, shuffle: bool = True, seed: int | None = None,
                   shuffle_buffer: int | None = None, fill: dict | None = None,
                   ragged: bool = False, repeat: bool | None = None, drop_remainder: bool = False,
                   dense=()):
        """A function ``fn(input_context=None) -> tf.data.Dataset`` reading this worker's spool.

        Elements are ``(dict of feature tensors, label)`` (or the dict alone without ``label``),
        ``batch_size`` rows each. ``shuffle`` permutes the order of the spool's chunks and of the
        rows within each chunk (65,536 rows) every epoch; ``shuffle_buffer=N`` mixes rows across
        windows of at least N rows instead (whole chunks, held in memory together); ``seed``
        makes the order repeatable. ``fill={"col": value}`` replaces nulls; without it a column
        with nulls is an error. Sparse vector columns (``elearn.sparse_vectors``) are ``tf.SparseTensor``
        unless named in ``dense``. In PS mode the dataset repeats (``repeat=None``), as
        ``ClusterCoordinator`` needs; pass ``repeat=False`` for one pass. For custom loops in PS mode::

            it = iter(ctx.coordinator.create_per_worker_dataset(ctx.dataset_fn(label="y")))
        """
        import tensorflow as tf

        from elearn.runtime.reader import spool_dataset

        info = self._feed(name)
        fills = {**self.fill, **(fill or {})}
        names = [c.name for c in info.columns]
        if label is not None and label not in names:
            raise FeedError(f"label {label!r} is not a column of {name!r}; columns: {', '.join(names)}")
        wanted = list(features) if features is not None else [n for n in names if n != label]
        missing = [f for f in wanted if f not in names]
        if missing:
            raise FeedError(f"features {missing} are not columns of {name!r}; columns: {', '.join(names)}")
        used = set(wanted) | ({label} if label else set())
        kinds = {c.name: c.kind for c in info.columns}
        nulls = {c: n for c, n in info.nulls.items() if n and c in used and c not in fills}
        not_sparse = [c for c in dense if kinds.get(c) != "sparse"]
        if not_sparse:
            raise FeedError(f"dense={not_sparse}: only sparse vector columns (elearn.sparse_vectors) "
                            "can be densified; other columns already arrive dense")
        if nulls:
            detail = ", ".join(f"{c} ({n} nulls)" for c, n in sorted(nulls.items()))
            raise FeedError(f"dataset {name!r} has nulls in {detail}. Fill them with "
                            f"ctx.dataset(..., fill={{'{next(iter(sorted(nulls)))}': 0}}) or "
                            "--fill COL=VALUE, or drop them in pre_train (df.na.drop / df.na.fill).")
        if repeat is None:
            repeat = self.mode == "ps"
        if shuffle_buffer is not None and (not isinstance(shuffle_buffer, int) or shuffle_buffer < 1):
            raise FeedError(f"shuffle_buffer must be a number of rows of at least 1, got {shuffle_buffer!r}")
        per_chunk = max((math.ceil(r / c) for r, c in zip(info.rows, info.chunks) if r and c), default=1)
        window = math.ceil(shuffle_buffer / per_chunk) if shuffle_buffer else 1
        kwargs = dict(features=wanted, label=label, batch_size=batch_size, shuffle=shuffle, seed=seed,
                      shuffle_window=window,
                      repeat=repeat, fill={c: v for c, v in fills.items() if c in used}, ragged=ragged,
                      list_lengths=info.list_lengths, drop_remainder=drop_remainder,
                      sizes=info.sizes, dense=tuple(dense))
        columns = info.columns
        empty = [w for w, r in enumerate(info.rows) if r == 0]
        if empty and info.total_rows:
            # A worker with no rows would never yield a batch: fit and the collective would wait.
            raise FeedError(f"worker(s) {', '.join(map(str, empty))} received no rows of {name!r} "
                            f"({info.total_rows} rows over {len(info.rows)} workers): feed at "
                            "least as many rows as --workers")
        if self.mode == "ps":
            dirs, chunks = list(info.dirs), list(info.chunks)

            def fn(input_context=None):
                idx = tf.distribute.coordinator.experimental_get_current_worker_index()
                return spool_dataset(tf.gather(tf.constant(dirs), idx),
                                     tf.gather(tf.constant(chunks, tf.int64), idx), columns, **kwargs)
        else:
            me = self.local_worker if self.local_worker is not None else self.task_index
            directory, n = info.dirs[me], info.chunks[me]

            def fn(input_context=None):
                ds = spool_dataset(directory, n, columns, **kwargs)
                options = tf.data.Options()
                # Each worker already holds its own partition: sharding again would drop rows.
                options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
                return ds.with_options(options)
        return fn

    def dataset(self, name: str = "train", **kwargs):
        """What ``ctx.keras`` ``Model.fit`` accepts in this mode; arguments as :meth:`dataset_fn`.

        PS mode: a ``DatasetCreator`` (pass ``steps_per_epoch=ctx.steps_per_epoch(batch_size)``).
        Allreduce mode: a distributed dataset of this worker's rows, ``batch_size`` rows per worker
        per step (a global batch of ``batch_size * num_workers``). It repeats: pass
        ``steps_per_epoch=ctx.steps_per_epoch(batch_size)`` as in PS mode, so that every worker
        runs the same number of steps. ``repeat=False`` gives exactly one such epoch.
        """
        if self.mode == "ps":
            return self.keras.utils.experimental.DatasetCreator(self.dataset_fn(name, **kwargs))
        import tensorflow as tf

        # Workers whose partition is a batch short would leave the others waiting in the
        # collective: each reads its own rows endlessly and an epoch is the largest worker's
        # batch count (smaller partitions wrap around; no row is dropped).
        one_epoch = kwargs.pop("repeat", True) is False
        steps = self.steps_per_epoch(kwargs.get("batch_size", 32), name)
        fn = self.dataset_fn(name, repeat=True, **kwargs)

        def per_worker(input_context=None):
            ds = fn(input_context)
            if one_epoch:
                ds = ds.take(steps).apply(tf.data.experimental.assert_cardinality(steps))
            return ds

        # Per-worker datasets as they are: experimental_distribute_dataset would re-batch them.
        return self.strategy.distribute_datasets_from_function(per_worker)

    def backup_callback(self, keras=None, save_freq="epoch"):
        """Allreduce mode: a Keras ``BackupAndRestore`` callback that resumes after a restart.

        Add it to ``Model.fit``; after a restart of the group, fit continues from the epoch after
        the last backup instead of from scratch::

            model.fit(ds, epochs=4, steps_per_epoch=steps, callbacks=[ctx.backup_callback()])

        ``keras`` is the Keras module the model was built with (default ``ctx.keras``, Keras 3;
        pass ``tf_keras`` for a tf_keras model). Only the chief's backup is kept, under
        ``checkpoint_dir``; every worker restores from it.
        """
        from elearn.mpi.backup import backup_callback

        return backup_callback(self, keras or self.keras, save_freq)
