"""``TrainContext``: everything the cluster decided, handed to the user's ``train(ctx)``."""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from elearn.errors import FeedError
from elearn.feed.columns import FeedInfo
from elearn.train.checkpoint import Checkpointer
from elearn.train.keras_fit import CheckpointEvery, fit_checkpoint
from elearn.train.progress import make_progress_callback


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
        feeds: ``{dataset name: FeedInfo}``, what was fed: each dataset's columns, rows per worker
            and nulls per column (``ctx.rows`` and ``ctx.steps_per_epoch`` read it).
        fill: the job's ``--fill`` values, used by every dataset of ``ctx.dataset``.
        attempt: 0, then one more for every restart of ``train``.

    The fields with a leading underscore are elearn's own: the mode's object that decides what
    differs between the modes, and where the application's outputs go.
    """

    strategy: Any
    _backend: Any                    # elearn.ps.PSBackend | elearn.mpi.AllreduceBackend
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
    feeds: dict[str, FeedInfo] = field(default_factory=dict)
    fill: dict[str, Any] = field(default_factory=dict)
    _outputs: Any = None             # elearn.train.outputs.Outputs: where things go
    attempt: int = 0

    @property
    def mode(self) -> str:
        return self._backend.name

    @property
    def is_chief(self) -> bool:
        return self._backend.is_chief(self.task_type, self.task_index)

    # -- progress -----------------------------------------------------------------------------
    def checkpoint(self, *, every_steps: int | None = None, every_seconds: float | None = None,
                   max_to_keep: int = 3, **objects):
        """A :class:`elearn.train.checkpoint.Checkpointer` over ``checkpoint_dir``, already restored.

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
        return self._checkpointer("", objects, every_steps=every_steps, every_seconds=every_seconds,
                                 max_to_keep=max_to_keep)

    def _checkpointer(self, name: str, objects: dict, *, every_steps=None, every_seconds=None,
                     max_to_keep: int = 3):
        """The :class:`~elearn.train.checkpoint.Checkpointer` of ``objects`` in ``checkpoint_dir/name``:
        restored from the kept checkpoints (an allreduce worker other than the chief restores the
        chief's), saved through this mode's I/O device and stored where the user asked."""
        import os

        if self._outputs is not None:
            store, source = self._outputs.checkpoint_stores(name)
        else:  # a context built by hand (tests): plain directories
            store, source = os.path.join(self.checkpoint_dir, name) if name else self.checkpoint_dir, None
        return Checkpointer(store, objects, every_steps=every_steps, every_seconds=every_seconds,
                            max_to_keep=max_to_keep, coordinator=self.coordinator,
                            on_save=self._on_checkpoint, source=source,
                            options=self._backend.checkpoint_options(), announce=not name,
                            scope=self.strategy.scope if self.strategy is not None else None)

    def _record(self, kind: str, **fields: Any) -> None:
        """An event in the application's ``events.jsonl`` (written by the chief; ignored elsewhere)."""
        if self.is_chief and self._outputs is not None:
            self._outputs.record("events.jsonl", json.dumps(
                {"time": time.time(), "event": kind, "attempt": self.attempt, **fields}))

    def report(self, step: int | None = None, **metrics) -> None:
        """Show training progress on the driver's console and keep it for the final summary::

            ctx.report(step=step, loss=float(loss), examples_per_sec=rate)
        """
        if not self.is_chief:
            return
        values = {k: (float(v) if hasattr(v, "__float__") and not isinstance(v, (int, bool)) else v)
                  for k, v in metrics.items()}
        self._keep_metrics(step=step, **values)
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        print(time.strftime("[elearn %H:%M:%S] ") + (f"step {step}: " if step is not None else "") + shown,
              flush=True)

    def _note_step(self, step: int) -> None:
        """Keep the step reached without showing it, so that a restart knows the steps it lost."""
        if self.is_chief:
            self._keep_metrics(step=int(step))

    def _keep_metrics(self, **record) -> None:
        if self._outputs is not None:
            self._outputs.record("metrics.jsonl", json.dumps({"time": time.time(), **record}))

    def progress_callback(self, every_seconds: float = 10.0, batch_size: int | None = None, keras=None):
        """A Keras callback that reports step, examples/s, loss and metrics (``ctx.report``).

        Every ``fit`` in ``train`` gets one already; pass your own to choose ``every_seconds``.
        ``keras`` is the Keras module of the model (default ``ctx.keras``). PS mode reports once per
        epoch (tf_keras allows no batch-level callbacks there); allreduce mode also every
        ``every_seconds``.
        """

        return make_progress_callback(self, every_seconds, batch_size, keras or self.keras)

    def tensorboard_callback(self, **kwargs):
        """``ctx.keras.callbacks.TensorBoard`` writing to ``log_dir`` (see ``--tensorboard``)."""
        return self.keras.callbacks.TensorBoard(log_dir=self.log_dir, **kwargs)

    def _on_checkpoint(self, step, path, restored=False):
        self._record("restore" if restored else "checkpoint", step=int(step), path=path)

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
        return self._backend.steps_per_epoch([math.ceil(r / batch_size) for r in self._feed(name).rows])

    def dataset_fn(self, name: str = "train", *, label: str | None = None,
                   features: Sequence[str] | None = None, batch_size: int = 32, shuffle: bool = True,
                   seed: int | None = None, shuffle_buffer: int | None = None,
                   fill: Mapping[str, Any] | None = None, ragged: bool = False,
                   repeat: bool | None = None, drop_remainder: bool = False,
                   dense: Sequence[str] = ()) -> Callable[..., Any]:
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
        from elearn.feed.reader import spool_dataset

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
            repeat = self._backend.repeat
        if shuffle_buffer is not None and (not isinstance(shuffle_buffer, int) or shuffle_buffer < 1):
            raise FeedError(f"shuffle_buffer must be a number of rows of at least 1, got {shuffle_buffer!r}")
        per_chunk = max((math.ceil(r / c) for r, c in zip(info.rows, info.chunks) if r and c), default=1)
        window = math.ceil(shuffle_buffer / per_chunk) if shuffle_buffer else 1
        kwargs: dict[str, Any] = dict(features=wanted, label=label, batch_size=batch_size, shuffle=shuffle, seed=seed,
                      shuffle_window=window,
                      repeat=repeat, fill={c: v for c, v in fills.items() if c in used}, ragged=ragged,
                      list_lengths=info.list_lengths, drop_remainder=drop_remainder,
                      sizes=info.sizes, dense=tuple(dense))
        empty = [w for w, r in enumerate(info.rows) if r == 0]
        if empty and info.total_rows:
            # A worker with no rows would never yield a batch: fit and the collective would wait.
            raise FeedError(f"worker(s) {', '.join(map(str, empty))} received no rows of {name!r} "
                            f"({info.total_rows} rows over {len(info.rows)} workers): feed at "
                            "least as many rows as --workers")
        return self._backend.reader(self, info, lambda directory, chunks: spool_dataset(
            directory, chunks, info.columns, **kwargs))

    def dataset(self, name: str = "train", *, label: str | None = None,
                features: Sequence[str] | None = None, batch_size: int = 32, shuffle: bool = True,
                seed: int | None = None, shuffle_buffer: int | None = None,
                fill: Mapping[str, Any] | None = None, ragged: bool = False,
                repeat: bool | None = None, drop_remainder: bool = False,
                dense: Sequence[str] = ()) -> Any:
        """What ``ctx.keras`` ``Model.fit`` accepts in this mode; arguments as :meth:`dataset_fn`.

        PS mode: a ``DatasetCreator`` (pass ``steps_per_epoch=ctx.steps_per_epoch(batch_size)``).
        Allreduce mode: a distributed dataset of this worker's rows, ``batch_size`` rows per worker
        per step (a global batch of ``batch_size * num_workers``). It repeats: pass
        ``steps_per_epoch=ctx.steps_per_epoch(batch_size)`` as in PS mode, so that every worker
        runs the same number of steps. ``repeat=False`` gives exactly one such epoch.
        ``drop_remainder=True`` leaves out a worker's last batch when it is short (with
        ``repeat=False``; a repeating stream has none, its batches run on across the passes).
        """
        kwargs: dict[str, Any] = dict(label=label, features=features, batch_size=batch_size, shuffle=shuffle, seed=seed,
                      shuffle_buffer=shuffle_buffer, fill=fill, ragged=ragged, repeat=repeat,
                      drop_remainder=drop_remainder, dense=dense)
        return self._backend.dataset(self, name, kwargs)

    def backup_callback(self, keras=None, save_freq="epoch"):
        """The checkpoint callback elearn adds to every ``fit`` by itself, to pass explicitly.

        Every ``fit`` in ``train`` already restores its latest checkpoint and saves one per epoch
        (see ``--checkpoint-every``); pass this to choose ``save_freq`` (``"epoch"`` or a number of
        steps) for one ``fit``::

            model.fit(ds, epochs=4, steps_per_epoch=steps, callbacks=[ctx.backup_callback(save_freq=500)])

        ``keras`` is the Keras module the model was built with (default ``ctx.keras``).
        """

        every = CheckpointEvery.parse(save_freq)
        return fit_checkpoint(keras or self.keras, self, every)
