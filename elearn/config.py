"""Submit options: one dataclass shared by ``submit()`` and ``pl_submit``, checked before anything starts."""
from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass, field, fields

from elearn.errors import ElearnError


@dataclass
class SubmitOptions:
    """Everything ``submit`` and ``pl_submit`` accept. See ``pl_submit --help`` for each flag."""

    ps: int = 0
    workers: int = 1
    master: str | None = None
    zk: str | None = None
    app_name: str | None = None
    checkpoint_dir: str | None = None
    model_dir: str | None = None
    work_dir: str | None = None
    conf: dict = field(default_factory=dict)
    args: dict = field(default_factory=dict)
    job_class: str | None = None
    register_timeout: float = 120.0
    feed_timeout: float = 3600.0
    ps_cores: int | None = None
    ps_memory: str | None = None
    worker_cores: int | None = None
    worker_memory: str | None = None
    worker_gpus: int | None = None
    max_restarts: int = 3
    heartbeat_timeout: float = 120.0
    runtime: str = "tf"
    fill: dict = field(default_factory=dict)
    archives: str | None = None
    conda_env: str | None = None
    venv: str | None = None
    tf_log: bool = False
    tensorboard: bool = False
    quiet: bool = False

    def validate(self) -> None:
        for name in ("ps", "workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ElearnError(f"--{name} must be a whole number, got {value!r}")
        if self.workers < 1:
            raise ElearnError(f"--workers must be at least 1, got {self.workers}")
        if self.ps < 0:
            raise ElearnError(f"--ps must be 0 (allreduce mode) or more (PS mode), got {self.ps}")
        if self.register_timeout <= 0:
            raise ElearnError("--register-timeout must be positive")
        if self.max_restarts < 0:
            raise ElearnError("--max-restarts must be 0 or more")
        if not self.heartbeat_timeout > 0:
            raise ElearnError("--heartbeat-timeout must be positive (seconds)")
        if self.runtime not in ("tf", "horovod"):
            raise ElearnError(f"--runtime {self.runtime!r}: use tf (MultiWorkerMirroredStrategy) or horovod")
        if self.runtime == "horovod" and self.ps:
            raise ElearnError("--runtime horovod is an allreduce runtime: use it with --ps 0")
        if self.runtime == "horovod":
            from elearn.mpi.horovod import require_horovod

            require_horovod()
        if self.app_name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,100}", self.app_name):
            raise ElearnError(f"--app-name {self.app_name!r}: use letters, digits, '.', '_' and '-'")

    @property
    def mode(self) -> str:
        return "ps" if self.ps > 0 else "allreduce"

    def app_id(self) -> str:
        if self.app_name:
            return self.app_name
        return time.strftime("elearn-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]

    @classmethod
    def from_kwargs(cls, **kwargs) -> "SubmitOptions":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ElearnError(f"unknown option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**kwargs)


def elearn_home() -> str:
    return os.path.abspath(os.environ.get("ELEARN_HOME") or os.path.join(os.path.expanduser("~"), ".elearn"))


def parse_kv(pairs, what: str) -> dict:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}`` (strings kept as strings), for ``--conf``."""
    if pairs is None:
        return {}
    if isinstance(pairs, dict):
        return {str(k): str(v) for k, v in pairs.items()}
    if isinstance(pairs, str):
        pairs = [pairs]
    out = {}
    for item in pairs:
        if "=" not in str(item):
            raise ElearnError(f"{what} {item!r} is not KEY=VALUE")
        k, v = str(item).split("=", 1)
        out[k.strip()] = v.strip()
    return out
