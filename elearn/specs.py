"""What the driver decides and the other processes of an application need, as typed, frozen values.

Two hand-offs cross process boundaries, each as one of these pickled:

- :class:`NodeSpec` travels with every node's Spark task (PS mode's PS and worker tasks, allreduce
  mode's barrier tasks) to ``elearn.runtime.node_task``;
- :class:`TrainSpec` reaches every process that runs the user's ``train`` (PS mode's coordinator on
  the driver host, allreduce mode's worker processes), with an :class:`Attempt` saying which
  attempt this is and what it was fed.

The mode-specific parts live in the backend objects they carry (``elearn.ps.PSBackend``,
``elearn.mpi.AllreduceBackend``), which are frozen dataclasses too; ``elearn.backend`` names the
hooks each process calls.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from elearn.cluster.registry import Credentials
from elearn.feed.columns import FeedPlan

if TYPE_CHECKING:
    from elearn.backend import NodeHooks, TrainingHooks


@dataclass(frozen=True)
class NodeSpec:
    """Everything a node's Spark task needs to join the application and run its TF process."""

    app_id: str
    zk: str                          # ZooKeeper as the node reaches it
    credentials: Credentials | None  # the application's ZooKeeper credentials (None: tests)
    node_dir: str                    # spools and logs: absolute on the driver's host, else relative
    same_host: bool                  # every node runs on the driver's host (local masters)
    backend: NodeHooks               # the mode's (elearn.backend)
    register_timeout: float          # the options' (elearn.driver.options.SubmitOptions)
    feed_timeout: float
    max_restarts: int
    plan: FeedPlan = field(default_factory=lambda: FeedPlan([], {}))
    tf_log: bool = False
    files: Any = None                # the driver's file service (DriverEndpoint); None: same host
    app_dir: str = ""                # the application's directory on the driver's host
    train: "TrainSpec | None" = None  # allreduce: what each worker's training process runs
    mounts: tuple = ()               # elearn.storage.mounts.MountMark: file:// places train writes directly
    embedded_zk: bool = False        # zk is the driver's embedded server (not the user's --zk)


@dataclass(frozen=True)
class TrainSpec:
    """What a process running ``train(ctx)`` needs, whatever the mode."""

    job: bytes                       # elearn.train.shipping.pack_job
    backend: TrainingHooks           # the mode's (elearn.backend)
    num_workers: int
    num_ps: int
    plan: FeedPlan
    checkpoint_uri: str              # where the user's checkpoints are kept (a path or URI)
    model_uri: str                   # where the exported model is kept (a path or URI)
    log_dir: str                     # TensorBoard events, in the application directory
    app_dir: str = ""                # the application's directory on the driver's host
    fill: dict = field(default_factory=dict)
    sys_path: tuple = ()             # folders the job's own modules are imported from
    checkpoint_every: str = "epoch"  # --checkpoint-every: elearn's checkpoints of every Keras fit
    on_driver_host: bool = True      # every process running train is on the driver's host
    files: Any = None                # the driver's file service (elearn.storage.driverfs.DriverEndpoint)
    tf_log: bool = False


@dataclass(frozen=True)
class Attempt:
    """One run of a training process: which one, what it was fed, and where it answers."""

    index: int                       # the worker index (allreduce) or 0 (the PS-mode chief)
    number: int                      # 0 for the first attempt, then one more per restart
    feeds: dict                      # dataset name -> FeedInfo
    result: str                      # JSON file: the outcome (written last, atomically)
    staging: str                     # a directory of this host for what is stored elsewhere
    cluster: dict | None = None      # PS mode: the TF cluster spec the driver published
    heartbeat: str | None = None     # allreduce: touched while alive (named at spawn: launch.HEARTBEAT_ENV)
    scratch: str | None = None       # allreduce non-chief workers: where their saves go
