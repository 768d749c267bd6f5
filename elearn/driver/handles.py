"""What a mode's ``drive`` hook works with, and the application's journal.

``Application`` owns an application's resources (directories, ZooKeeper, the SparkSession, the file
service) and tears them down. A mode's driver (``elearn.ps.driver``, ``elearn.mpi.driver``) never
sees it: ``drive`` receives :class:`Handles`, the few things it uses, already built — the options,
the registry, Spark operations, the node jobs, the console, the journal, where things are, and the
frozen specs its nodes and training processes get.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

from elearn.cluster.registry import AppRegistry
from elearn.driver.console import Console
from elearn.driver.nodejobs import NodeJobs
from elearn.driver.options import SubmitOptions
from elearn.driver.sparkops import SparkOps
from elearn.specs import NodeSpec, TrainSpec
from elearn.storage.jsonlines import append_record


class Journal:
    """The application's record as it runs: when each phase ended (seconds since the start, for
    the summary's phases) and ``events.jsonl`` (restarts, checkpoints, the cluster's generations)."""

    def __init__(self, app_dir: str):
        self.events_path = os.path.join(app_dir, "events.jsonl")
        self.metrics_path = os.path.join(app_dir, "metrics.jsonl")  # written by the chief's ctx.report
        self.timings: dict[str, float] = {}
        self._t0 = time.time()

    @property
    def started(self) -> float:
        return self._t0

    def mark(self, phase: str) -> None:
        self.timings[phase] = round(time.time() - self._t0, 3)

    def event(self, kind: str, **fields) -> None:
        append_record(self.events_path, kind, **fields)


@dataclass(frozen=True)
class Handles:
    """The application as a mode's ``drive`` sees it."""

    opts: SubmitOptions
    app_id: str
    app_dir: str                     # on this host
    node_dir: str                    # node logs (and spools of nodes on this host)
    master: str                      # the Spark master the nodes run on
    single_host: bool                # every node runs on this host
    advertised_host: str             # the address nodes reach this driver at
    console: Console
    registry: AppRegistry
    ops: SparkOps
    jobs: NodeJobs
    journal: Journal
    check_killed: Callable[[], None]  # raises KeyboardInterrupt after Ctrl-C, KilledError once ``pl_submit kill`` asked
    node_spec: NodeSpec              # what every node's task gets
    train_spec: TrainSpec            # what every training process gets


@dataclass(frozen=True)
class Trained:
    """What a mode's ``drive`` returns: the exported model and what the summary reports."""

    model_dir: str | None
    rows: dict = field(default_factory=dict)             # dataset -> rows fed in total
    per_worker_rows: dict = field(default_factory=dict)  # dataset -> [rows of each worker]
    restarts: int = 0
    restart_causes: dict = field(default_factory=dict)   # "ps:0" / "killed by SIGKILL" -> count
