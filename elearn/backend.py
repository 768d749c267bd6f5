"""The seam between the parts both modes share and the two modes themselves.

A backend (``elearn.ps.PSBackend``, ``elearn.mpi.AllreduceBackend``) is a frozen dataclass — the
mode's configuration — plus hooks. ``submit`` chooses it once; it then travels, pickled, inside the
specs every other process gets. Three processes call it, and each Protocol below names what one of
them calls:

- :class:`DriverHooks`: ``pl_submit``'s process (``elearn.driver``);
- :class:`NodeHooks`: a node's Spark task (``elearn.runtime.node_task``);
- :class:`TrainingHooks`: the training process (``elearn.train``), and its launcher.

A hook imports its implementation when called, so a node's task never loads the driver's modules
(the import contract in ``pyproject.toml`` holds the package to that).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol

if TYPE_CHECKING:
    from elearn.driver.handles import Handles, Trained
    from elearn.driver.options import SubmitOptions
    from elearn.feed.columns import FeedInfo
    from elearn.runtime.node_task import NodeTask
    from elearn.specs import Attempt, TrainSpec
    from elearn.train.context import TrainContext


class DriverHooks(Protocol):
    """Called on the driver."""

    name: ClassVar[str]               # "ps" | "allreduce": the mode, as the console and summary say it
    trains_on_driver: ClassVar[bool]  # whether train runs on the driver's host (PS mode's coordinator)

    def spark_conf(self, opts: SubmitOptions, master: str, conf: dict, say: Callable[[str], None] | None = None) -> dict:
        """The Spark settings the mode needs on ``master``, merged under the user's ``conf``."""

    def drive(self, handles: Handles, frame) -> Trained:
        """Run the job: start the node jobs (fed ``frame``), supervise training, restart on loss."""


class NodeHooks(Protocol):
    """Called in every node's Spark task, around the shared node life (``NodeTask.run``)."""

    def before_spool(self, task: NodeTask) -> None:
        """Start what can start before the rows arrive (PS mode: the TF server, so TF imports)."""

    def serve(self, task: NodeTask) -> dict:
        """Serve until the application is over; what the node's statistics row adds."""


class TrainingHooks(Protocol):
    """Called in (and for) the process that runs ``train(ctx)``, and by ``TrainContext``."""

    task_type: ClassVar[str]          # TF's name of that process: "chief" (PS) or "worker" (allreduce)
    repeat: ClassVar[bool]            # whether datasets repeat endlessly by default
    batch_hooks: ClassVar[bool]       # whether Keras batch-level callbacks may read logs
    time_check_steps: ClassVar[int]   # steps between agreeing on a time-based checkpoint
    slot_device: ClassVar[str | None]  # where optimizer slots' initial values are computed (None: here)

    def process_env(self) -> dict:
        """Environment the training process starts with (read by TensorFlow at import)."""

    def strategy(self, spec: TrainSpec, attempt: Attempt, load_job: Callable[[], Any]) -> tuple:
        """``(strategy, coordinator or None, job)``: built before any other TF op."""

    def keras(self) -> Any:
        """The Keras module that trains in this mode (``ctx.keras``)."""

    def is_chief(self, task_type: str, index: int) -> bool: ...

    def steps_per_epoch(self, batches_per_worker: list) -> int: ...

    def reader(self, ctx: TrainContext, info: FeedInfo, read: Callable) -> Callable:
        """``fn(input_context)`` reading the spool of the worker it runs on."""

    def dataset(self, ctx: TrainContext, name: str, kwargs: dict) -> Any:
        """What ``ctx.dataset`` returns for this mode's ``fit``."""

    def checkpoint_options(self) -> Any: ...

    def save_options(self) -> Any: ...

    def agree(self, ctx: TrainContext, flag: bool) -> bool:
        """``flag`` as every training process decides it (allreduce: any of them)."""


class Backend(DriverHooks, NodeHooks, TrainingHooks, Protocol):
    """All of a mode's hooks: what ``submit`` chooses."""
