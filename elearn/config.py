"""Submit options, defined once: ``submit``'s keyword arguments, ``pl_submit``'s flags and help page.

Every option is one field of :class:`SubmitOptions` whose metadata (an :class:`Flag`) holds its
help text, group and metavar. ``pl_submit`` builds its signature, its strict argument check and its
``--help`` page from these fields; ``submit(**options)`` accepts exactly their names. Values are
checked and normalised in :meth:`SubmitOptions.checked` before anything starts.
"""
from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any

from elearn.errors import ElearnError

GROUPS = ("Cluster", "Environment and executor shapes", "Job", "Waits and recovery", "Output")


@dataclass(frozen=True)
class Flag:
    """How an option appears on the command line and its help page."""

    help: str
    group: str
    metavar: str = ""
    cli: str = ""              # the flag's name when it differs from the field's (args -> --arg)
    repeatable: bool = False   # --conf a=1 --conf b=2
    python_only: bool = False  # a keyword of submit() with no command-line flag (a SparkSession)

    def flag(self, name: str) -> str:
        return "--" + (self.cli or name).replace("_", "-")


def _opt(default, help: str, group: str, metavar: str = "", **kw):
    flag = Flag(help, group, metavar, **kw)
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"flag": flag})
    return field(default=default, metadata={"flag": flag})


@dataclass(frozen=True)
class SubmitOptions:
    """Everything ``submit`` and ``pl_submit`` accept. ``pl_submit --help`` shows each flag."""

    ps: int = _opt(0, "Parameter servers. N > 0 runs PS mode (ParameterServerStrategy; train runs in "
                      "a coordinator process on the driver host); 0 runs allreduce mode "
                      "(MultiWorkerMirroredStrategy, train runs in every worker).", "Cluster", "N")
    workers: int = _opt(1, "TF workers; each is one Spark task fed one share of the DataFrame.",
                        "Cluster", "N")
    remote: str | None = _opt(None, "Spark Connect server sc://HOST:PORT to run on instead of starting "
                                    "Spark here (as in a notebook's Connect session).",
                              "Cluster", "sc://HOST:PORT")
    master: str | None = _opt(None, "Spark master URL (local[K], local-cluster[N,C,M], spark://..., "
                                    "yarn, k8s://...). Default: local[ps + workers], enough task "
                                    "slots for every node.", "Cluster", "URL")
    zk: str | None = _opt(None, "ZooKeeper HOST:PORT[,HOST:PORT][/chroot] where nodes meet. "
                                "Default: an embedded server.", "Cluster", "HOSTS[/chroot]")
    conf: dict = _opt({}, "Spark configuration KEY=VALUE; repeat for more.", "Cluster", "KEY=VALUE",
                      repeatable=True)
    archives: str | None = _opt(None, "A conda-pack or venv-pack archive (.tar.gz, .tgz, .tar, .zip) "
                                      "shipped as the executors' Python environment; executors and "
                                      "TF processes run its bin/python.",
                                "Environment and executor shapes", "ENV.tar.gz")
    venv: str | None = _opt(None, "A virtualenv directory packed with venv-pack now and shipped like "
                                  "--archives (cached). Its archive links to the venv's base "
                                  "interpreter, which must exist on every host.",
                            "Environment and executor shapes", "PATH")
    conda_env: str | None = _opt(None, "A conda environment (name or prefix) packed with conda-pack "
                                       "now and shipped like --archives; the archive is cached by "
                                       "content, so an unchanged environment is packed once.",
                                 "Environment and executor shapes", "NAME_OR_PREFIX")
    py_files: str | None = _opt(None, "Comma-separated .py, .zip and .egg files and package "
                                      "directories put on every node's import path, as spark-submit "
                                      "does; the job file's own folder (its .py files) travels too.",
                                "Environment and executor shapes", "FILES")
    ps_cores: int | None = _opt(None, "Cores per PS executor (a ResourceProfile where the cluster "
                                      "manager supports it).", "Environment and executor shapes", "N")
    ps_memory: str | None = _opt(None, "Memory per PS executor, e.g. 8g.",
                                 "Environment and executor shapes", "SIZE")
    worker_cores: int | None = _opt(None, "Cores per worker executor.",
                                    "Environment and executor shapes", "N")
    worker_memory: str | None = _opt(None, "Memory per worker executor.",
                                     "Environment and executor shapes", "SIZE")
    worker_gpus: int | None = _opt(None, "GPUs per worker task.", "Environment and executor shapes", "N")
    args: dict = _opt({}, "Job argument KEY=VALUE, in self.args; values parse as Python literals. "
                          "Repeatable.", "Job", "KEY=VALUE", cli="arg", repeatable=True)
    job_class: str | None = _opt(None, "Which subclass to run when the file defines several.", "Job", "NAME")
    app_name: str | None = _opt(None, "Application id. Re-running with the same name and checkpoint "
                                      "dir resumes.", "Job", "NAME")
    fill: dict = _opt({}, "COLUMN=VALUE used for nulls in that column of every fed dataset. Repeatable.",
                      "Job", "COLUMN=VALUE", repeatable=True)
    checkpoint_dir: str | None = _opt(None, "Where checkpoints go (shared storage on a real cluster).",
                                      "Job", "DIR")
    model_dir: str | None = _opt(None, "Where the model returned by train() is exported.", "Job", "DIR")
    work_dir: str | None = _opt(None, "Root of the per-application directory (logs, events, summary). "
                                      "Default ~/.elearn/apps.", "Job", "DIR")
    checkpoint_every: str = _opt("epoch", "Checkpoints elearn takes of every Keras fit in train, "
                                          "restored after a restart: epoch, or also every N steps "
                                          "(500) or every so long (90s, 10m, 1h), or off.",
                                 "Waits and recovery", "WHEN")
    register_timeout: float = _opt(120.0, "Seconds to wait for every node to register before failing.",
                                   "Waits and recovery", "SECONDS")
    feed_timeout: float = _opt(3600.0, "Seconds to wait for the workers to spool the DataFrame.",
                               "Waits and recovery", "SECONDS")
    max_restarts: int = _opt(3, "Restarts of a failed node (PS mode) or of the group (allreduce mode).",
                             "Waits and recovery", "N")
    heartbeat_timeout: float = _opt(120.0, "Allreduce mode: seconds without a heartbeat from a "
                                           "worker's TF process (frozen, or stuck holding Python's "
                                           "lock) before the group is restarted.",
                                    "Waits and recovery", "SECONDS")
    runtime: str = _opt("tf", "Allreduce mode's runtime: tf (MultiWorkerMirroredStrategy).",
                        "Waits and recovery", "tf")
    tf_log: bool = _opt(False, "Let TensorFlow's and Spark's own log output through.", "Output")
    spark: Any = _opt(None, "A SparkSession to run on (Python only: submit(..., spark=session)); by "
                            "default the one already running in the process, if any.", "Cluster",
                      python_only=True)
    tensorboard: bool = _opt(False, "Start TensorBoard on the driver over the application's log dir "
                                    "and print its URL.", "Output")
    quiet: bool = _opt(False, "Print only errors.", "Output")

    @property
    def mode(self) -> str:
        return "ps" if self.ps > 0 else "allreduce"

    def app_id(self) -> str:
        if self.app_name:
            return self.app_name
        return time.strftime("elearn-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]

    @classmethod
    def from_kwargs(cls, **kwargs) -> "SubmitOptions":
        """The options ``submit(**kwargs)`` was given, type-checked and validated."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            hints = [suggestion(u.replace("_", "-"), ["--" + k.replace("_", "-") for k in known])
                     for u in unknown]
            raise ElearnError(f"unknown option(s): {', '.join(unknown)}"
                              + "".join(f"; {h}" for h in hints if h))
        return cls(**{name: value if option_field(name).metadata["flag"].python_only
                      else coerce(option_field(name), value) for name, value in kwargs.items()}).checked()

    def checked(self) -> "SubmitOptions":
        """Raise an ``ElearnError`` naming the flag and the fix for any value that cannot work."""
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
        if self.runtime == "horovod":
            from elearn.mpi.horovod import require_horovod

            require_horovod()  # raises, saying why and what it would take
        if self.runtime != "tf":
            raise ElearnError(f"--runtime {self.runtime!r}: the runtime is tf (MultiWorkerMirroredStrategy)")
        from elearn.keras_fit import CheckpointEvery
        from elearn.pyfiles import parse_py_files

        CheckpointEvery.parse(self.checkpoint_every)
        parse_py_files(self.py_files)
        if self.remote and self.master:
            raise ElearnError(f"--remote {self.remote} and --master {self.master}: a Spark Connect server "
                              "has its own master; give one of them")
        if self.remote and not self.remote.startswith("sc://"):
            raise ElearnError(f"--remote {self.remote!r}: use a Spark Connect URL, sc://HOST:PORT")
        if self.app_name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,100}", self.app_name):
            raise ElearnError(f"--app-name {self.app_name!r}: use letters, digits, '.', '_' and '-'")
        return self


def option_fields(cli: bool = True) -> list:
    """The options with a command-line flag (``cli``), or all of them."""
    return [f for f in fields(SubmitOptions) if not (cli and f.metadata["flag"].python_only)]


def option_field(name: str):
    return next(f for f in fields(SubmitOptions) if f.name == name)


def _base_type(f) -> str:
    """``"int"``, ``"float"``, ``"str"``, ``"bool"`` or ``"dict"`` from the field's annotation."""
    return str(f.type).split("|")[0].strip()


def coerce(f, value):
    """``value`` for field ``f`` in its declared type; an ``ElearnError`` naming the flag if it is not."""
    kind, flag = _base_type(f), f.metadata["flag"].flag(f.name)
    if value is None and f.default is None:
        return None
    try:
        if kind == "dict":
            return parse_literals(value, flag) if f.metadata["flag"].cli == "arg" or f.name == "fill" \
                else parse_kv(value, flag)
        if kind == "bool":
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind == "int":
            if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return value if isinstance(value, str) else str(value)  # fire reads "--app-name 123" as 123
    except (TypeError, ValueError):
        what = {"int": "a whole number", "float": "a number", "bool": "true or false"}.get(kind, "text")
        raise ElearnError(f"{flag} must be {what}, got {value!r}") from None


def suggestion(flag: str, known: list[str]) -> str:
    """``"did you mean --workers?"`` for a mistyped flag, or a spark-submit flag's elearn spelling."""
    import difflib

    if flag in SPARK_SUBMIT_FLAGS:
        return SPARK_SUBMIT_FLAGS[flag]
    close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
    return f"did you mean {close[0]}?" if close else ""


# spark-submit's flags that pl_submit spells differently: the error says how.
SPARK_SUBMIT_FLAGS = {
    "--num-executors": "pl_submit takes it as --conf spark.executor.instances=N",
    "--executor-memory": "use --worker-memory/--ps-memory, or --conf spark.executor.memory=SIZE",
    "--executor-cores": "use --worker-cores/--ps-cores, or --conf spark.executor.cores=N",
    "--driver-memory": "pl_submit takes it as --conf spark.driver.memory=SIZE",
    "--driver-cores": "pl_submit takes it as --conf spark.driver.cores=N",
    "--total-executor-cores": "pl_submit takes it as --conf spark.cores.max=N",
    "--queue": "pl_submit takes it as --conf spark.yarn.queue=NAME",
    "--name": "did you mean --app-name?",
    "--jars": "pl_submit takes it as --conf spark.jars=JARS",
    "--packages": "pl_submit takes it as --conf spark.jars.packages=COORDINATES",
    "--files": "pl_submit takes it as --conf spark.files=FILES",
    "--deploy-mode": "pl_submit is the driver (client mode); there is no cluster deploy mode",
    "--properties-file": "pass each setting as --conf KEY=VALUE",
}


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


def parse_literals(pairs, what: str = "--arg") -> dict:
    """``["lr=0.1", "name=x"]`` -> ``{"lr": 0.1, "name": "x"}``; values are Python literals if they parse."""
    import ast

    if isinstance(pairs, dict):
        return dict(pairs)
    out = {}
    for key, value in parse_kv(pairs, what).items():
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


__all__ = ["SubmitOptions", "Flag", "GROUPS", "option_fields", "coerce", "suggestion", "elearn_home",
           "parse_kv", "parse_literals"]
