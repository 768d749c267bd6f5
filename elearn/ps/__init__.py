"""PS mode: parameter-server and worker Spark jobs that meet in ZooKeeper; the driver coordinates.

:class:`PSBackend` is the mode's configuration plus its hooks, called by the parts both modes share:
the driver (``drive``), every node's task (``before_spool``, ``serve``), the training process
(``process_env``, ``strategy``, ``keras``) and ``TrainContext`` (how steps and
datasets are counted and built). The hooks import their implementations when called, so a node's
task never loads the driver's code and the other way round.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

CHIEF_DEVICE = "/job:chief/replica:0/task:0/device:CPU:0"  # the host that sees the directories


@dataclass(frozen=True)
class PSBackend:
    num_ps: int

    name: ClassVar[str] = "ps"
    task_type: ClassVar[str] = "chief"    # train runs in TF's chief, the coordinator
    trains_on_driver: ClassVar[bool] = True  # the coordinator runs on the driver's host
    repeat: ClassVar[bool] = True         # ClusterCoordinator needs endless per-worker datasets
    batch_hooks: ClassVar[bool] = False   # tf_keras refuses batch-level callbacks under this strategy
    # tf_keras's current optimizers compute each slot's full-size initial value where they are
    # built; on the coordinator that is a transient of 3x the slot, sent over (elearn.train.keras_fit).
    slot_device: ClassVar[str | None] = "/job:ps/task:0/device:CPU:0"

    # -- the driver ------------------------------------------------------------------------------
    def spark_conf(self, opts, master: str, conf: dict, say=None) -> dict:
        from elearn.driver.shapes import ps_conf

        return ps_conf(opts, master, conf, say)

    def drive(self, handles, frame):
        from elearn.ps.driver import run_ps

        return run_ps(handles, frame)

    # -- a node's Spark task ---------------------------------------------------------------------
    def before_spool(self, task) -> None:
        from elearn.ps.node import start_server

        start_server(task)  # TensorFlow imports while the rows arrive

    def serve(self, task) -> dict:
        from elearn.ps.node import serve

        return serve(task)

    # -- the training process (the coordinator) ---------------------------------------------------
    def process_env(self) -> dict:
        # Only Keras 2 (tf_keras) trains under ParameterServerStrategy, so `tf.keras` means tf_keras
        # here, like ctx.keras; it also spares importing Keras 3 when the job does not ask for it.
        # The coordinator, not gRPC's retry loop, decides what a lost node means.
        return {"TF_USE_LEGACY_KERAS": "1", "GRPC_FAIL_FAST": "use_caller"}

    def strategy(self, spec, attempt, load_job):
        from elearn.ps.strategy import build_strategy

        job = load_job()
        strategy, coordinator = build_strategy(attempt.cluster, job.variable_partitioner(self.num_ps))
        return strategy, coordinator, job

    def keras(self):
        import tf_keras

        return tf_keras

    def is_chief(self, task_type: str, index: int) -> bool:
        return task_type == "chief"

    # -- TrainContext -------------------------------------------------------------------------------
    def steps_per_epoch(self, batches_per_worker: list) -> int:
        # Every step is one batch on one worker: an epoch is every worker's batches.
        return max(1, sum(batches_per_worker))

    def reader(self, ctx, info, read):
        """``fn(input_context)``: traced on the coordinator, run on each worker, which reads its own
        spool; the path is chosen by the worker index TF gives the running worker."""
        import tensorflow as tf

        dirs, chunks = list(info.dirs), list(info.chunks)

        def fn(input_context=None):
            idx = tf.distribute.coordinator.experimental_get_current_worker_index()
            return read(tf.gather(tf.constant(dirs), idx), tf.gather(tf.constant(chunks, tf.int64), idx))
        return fn

    def dataset(self, ctx, name: str, kwargs: dict):
        return ctx.keras.utils.experimental.DatasetCreator(ctx.dataset_fn(name, **kwargs))

    # Checkpoints: the chief is the one process that saves and restores, through its own device:
    # the variables live on the parameter servers, whose hosts need not see the checkpoint dir.
    time_check_steps: ClassVar[int] = 1

    def checkpoint_options(self):
        import tensorflow as tf

        return tf.train.CheckpointOptions(experimental_io_device=CHIEF_DEVICE)

    def save_options(self):
        import tensorflow as tf

        return tf.saved_model.SaveOptions(experimental_io_device=CHIEF_DEVICE)

    def agree(self, ctx, flag: bool) -> bool:
        return flag  # one process decides
