"""Allreduce mode: one barrier stage of workers, MultiWorkerMirroredStrategy.

The folder is called ``mpi`` after the name the product gives this architecture ("MPI
architecture", ``--ps 0``): every worker holds a full copy of the model and the workers all-reduce
their gradients each step, as MPI programs do. No MPI library is involved; TensorFlow's own
collectives (gRPC, ring all-reduce) carry the gradients.

:class:`AllreduceBackend` is the mode's configuration plus its hooks, called by the parts both modes
share: the driver (``drive``), every worker's task (``before_spool``, ``serve``: meet at the barrier,
run the training process in attempts), the training process (``strategy``, ``keras``, ...) and
``TrainContext``. The hooks import their implementations when called.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class AllreduceBackend:
    workers: int
    heartbeat_timeout: float           # --heartbeat-timeout: seconds without a beat from a worker's process: hung
    heartbeat_every: float = 2.0

    name: ClassVar[str] = "allreduce"
    task_type: ClassVar[str] = "worker"   # train runs in every worker; worker 0 is the chief
    trains_on_driver: ClassVar[bool] = False  # the workers' tasks run it, wherever they are
    repeat: ClassVar[bool] = False        # dataset_fn: one pass unless asked (ctx.dataset repeats)
    batch_hooks: ClassVar[bool] = True
    slot_device: ClassVar[str | None] = None  # every worker holds its own slots, built where it is

    # -- the driver ------------------------------------------------------------------------------
    def spark_conf(self, opts, master: str, conf: dict, say=None) -> dict:
        from elearn.driver.shapes import allreduce_conf

        out = allreduce_conf(opts, master, conf, say)
        # Spark re-checks a barrier stage's slots every 15 s, 40 times, before failing: keep
        # that within --register-timeout, where elearn turns the failure into the arithmetic.
        out.setdefault("spark.scheduler.barrier.maxConcurrentTasksCheck.interval", "2s")
        out.setdefault("spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures",
                       str(max(1, int(opts.register_timeout // 2))))
        return out

    def drive(self, handles, frame):
        from elearn.mpi.driver import run_allreduce

        return run_allreduce(handles, frame)

    # -- a worker's Spark task -----------------------------------------------------------------------
    def before_spool(self, task) -> None:
        """Nothing to start yet: the training process needs every worker's address first."""

    def serve(self, task) -> dict:
        from elearn.mpi.node import serve

        return serve(task)

    # -- the training process ----------------------------------------------------------------------
    def process_env(self) -> dict:
        """Nothing: Keras 3 (``keras``) is ``ctx.keras`` here."""
        return {}

    def strategy(self, spec, attempt, load_job):
        from elearn.mpi.strategy import build_strategy

        strategy = build_strategy(self.workers)  # before any other TF op: the collective runtime
        return strategy, None, load_job()

    def keras(self):
        import keras

        return keras

    def is_chief(self, task_type: str, index: int) -> bool:
        return index == 0

    # -- TrainContext -------------------------------------------------------------------------------
    def steps_per_epoch(self, batches_per_worker: list) -> int:
        # Every worker steps together: an epoch is the largest worker's batches.
        return max(1, max(batches_per_worker))

    def reader(self, ctx, info, read):
        """``fn(input_context)`` reading this worker's own spool, never sharded again."""
        import tensorflow as tf

        me = ctx.task_index
        directory, chunks = info.dirs[me], info.chunks[me]

        def fn(input_context=None):
            options = tf.data.Options()
            # Each worker already holds its own partition: sharding again would drop rows.
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
            return read(directory, chunks).with_options(options)
        return fn

    def dataset(self, ctx, name: str, kwargs: dict):
        """A distributed dataset of this worker's rows, every worker running the same steps."""
        import tensorflow as tf

        # Workers whose share is a batch short would leave the others waiting in the collective:
        # each reads its own rows endlessly and an epoch is the largest worker's batch count
        # (smaller shares wrap around; no row is dropped).
        one_epoch = kwargs.pop("repeat", True) is False
        steps = ctx.steps_per_epoch(kwargs.get("batch_size", 32), name)
        fn = ctx.dataset_fn(name, repeat=True, **kwargs)

        def per_worker(input_context=None):
            ds = fn(input_context)
            if one_epoch:
                ds = ds.take(steps).apply(tf.data.experimental.assert_cardinality(steps))
            return ds

        # Per-worker datasets as they are: experimental_distribute_dataset would re-batch them.
        return ctx.strategy.distribute_datasets_from_function(per_worker)

    # Checkpoints: every worker saves at the same steps (saving may run collectives) into its own
    # directory, and restores what the chief saved, so that all start from the same state
    # (elearn.train.outputs: only the chief's are kept).
    time_check_steps: ClassVar[int] = 50   # steps between agreeing on a time-based save

    def checkpoint_options(self):
        return None

    def save_options(self):
        return None

    def agree(self, ctx, flag: bool) -> bool:
        """True when any worker's ``flag`` is: one small all-reduce, so all decide alike."""
        import tensorflow as tf

        value = ctx.strategy.run(lambda: tf.constant(1.0 if flag else 0.0))
        return float(ctx.strategy.reduce("MAX", value, axis=None)) > 0
