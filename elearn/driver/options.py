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
from typing import TYPE_CHECKING

from elearn.driver.pyfiles import parse_py_files
from elearn.errors import ElearnError
from elearn.train.keras_fit import CheckpointEvery

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

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
                      "(MultiWorkerMirroredStrategy, train runs in every worker). Default: 0, "
                      "allreduce mode.", "Cluster", "N")
    workers: int = _opt(1, "TF workers; each is one Spark task fed one share of the DataFrame.",
                        "Cluster", "N")
    remote: str | None = _opt(None, "Spark Connect server sc://HOST:PORT to run on instead of starting "
                                    "Spark here (as in a notebook's Connect session). Default: Spark "
                                    "starts in this process.",
                              "Cluster", "sc://HOST:PORT")
    master: str | None = _opt(None, "Spark master URL (local[K], local-cluster[N,C,M], spark://..., "
                                    "yarn, k8s://...). Default: local[ps + workers], enough task "
                                    "slots for every node.", "Cluster", "URL")
    zk: str | None = _opt(None, "ZooKeeper HOST:PORT[,HOST:PORT][/chroot] where nodes meet. "
                                "Default: an embedded server.", "Cluster", "HOSTS[/chroot]")
    conf: dict = _opt({}, "Spark configuration KEY=VALUE; repeat for more (-c KEY=VALUE, as "
                          "spark-submit). Default: none beyond what elearn sets.", "Cluster", "KEY=VALUE",
                      repeatable=True)
    archives: str | None = _opt(None, "Comma-separated archives (.tar.gz, .tgz, .tar, .zip; a path or "
                                      "a URI), as spark-submit: the first is a conda-pack or venv-pack "
                                      "archive shipped as the executors' Python environment (executors "
                                      "and TF processes run its bin/python); any others are unpacked "
                                      "beside it in every executor's working directory, ARCHIVE#NAME "
                                      "naming the folder. Default: none; executors run the interpreter "
                                      "at this driver's path (or PYSPARK_PYTHON).",
                                "Environment and executor shapes", "ENV.tar.gz[,A.zip]")
    venv: str | None = _opt(None, "A virtualenv directory packed with venv-pack now and shipped like "
                                  "--archives (cached). Its archive links to the venv's base "
                                  "interpreter, which must exist on every host. Not an editable "
                                  "install (pip install -e): venv-pack refuses it. Default: none.",
                            "Environment and executor shapes", "PATH")
    conda_env: str | None = _opt(None, "A conda environment (name or prefix) packed with conda-pack "
                                       "now and shipped like --archives; the archive is cached by "
                                       "content, so an unchanged environment is packed once. "
                                       "Default: none.",
                                 "Environment and executor shapes", "NAME_OR_PREFIX")
    py_files: str | None = _opt(None, "Comma-separated .py, .zip and .egg files and package "
                                      "directories put on every node's import path, as spark-submit "
                                      "does. Default: none; the job file's own folder (its .py "
                                      "files) travels anyway.",
                                "Environment and executor shapes", "FILES")
    ps_cores: int | None = _opt(None, "Cores per PS executor (a ResourceProfile where the cluster "
                                      "manager supports it). Default: the application's executor "
                                      "shape.", "Environment and executor shapes", "N")
    ps_memory: str | None = _opt(None, "Memory per PS executor, e.g. 8g. Default: the application's "
                                       "executor shape.", "Environment and executor shapes", "SIZE")
    worker_cores: int | None = _opt(None, "Cores per worker executor. Default: Spark's "
                                          "(spark.executor.cores).", "Environment and executor shapes", "N")
    worker_memory: str | None = _opt(None, "Memory per worker executor. Default: Spark's "
                                           "(spark.executor.memory).",
                                     "Environment and executor shapes", "SIZE")
    worker_gpus: int | None = _opt(None, "GPUs per worker task. Default: none.",
                                   "Environment and executor shapes", "N")
    args: dict = _opt({}, "Job argument KEY=VALUE, in self.args; values parse as Python literals. "
                          "Repeatable. Default: none.", "Job", "KEY=VALUE", cli="arg", repeatable=True)
    job_class: str | None = _opt(None, "Which subclass to run when the file defines several. Default: "
                                       "the file's only SparkTFJob subclass.", "Job", "NAME")
    app_name: str | None = _opt(None, "Application id. Re-running with the same name and checkpoint "
                                      "dir resumes. Default: elearn-DATE-TIME-RANDOM.", "Job", "NAME")
    fill: dict = _opt({}, "COLUMN=VALUE used for nulls in that column of every fed dataset. Repeatable. "
                          "Default: none (nulls are an error).", "Job", "COLUMN=VALUE", repeatable=True)
    checkpoint_dir: str | None = _opt(None, "Where checkpoints go: a path or a URI (file://, s3://, "
                                            "gs://, hdfs://, abfs://). Default: checkpoints/ in the "
                                            "application directory.", "Job", "PATH|URI")
    model_dir: str | None = _opt(None, "Where the model returned by train() is exported: a path or a URI "
                                       "(file://, s3://, gs://, hdfs://, abfs://). Default: model/ in "
                                       "the application directory.", "Job", "PATH|URI")
    work_dir: str | None = _opt(None, "Root of the per-application directories (logs, events, summary): "
                                      "a path or a URI (file://, s3://, gs://, hdfs://, abfs://; a URI "
                                      "keeps a copy there). Default: $ELEARN_HOME/apps "
                                      "(~/.elearn/apps).", "Job", "PATH|URI")
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
    tf_log: bool = _opt(False, "Let TensorFlow's and Spark's own log output through (--verbose, as "
                               "spark-submit).", "Output")
    spark: SparkSession | None = _opt(None, "A SparkSession to run on (Python only: submit(..., spark=session)); by "
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
        """The options ``submit(**kwargs)`` was given, type-checked and validated.

        Errors spell the options as Python keywords (``workers=``): ``pl_submit`` checks its command
        line against the flags before it gets here.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            hints = [python_suggestion(u, sorted(known)) for u in unknown]
            raise ElearnError(f"submit() got unknown option(s) {', '.join(f'{u}=' for u in unknown)}"
                              + "".join(f"; {h}" for h in hints if h)
                              + " (docs/api.md lists submit's keywords)")
        values = {}
        for name, value in kwargs.items():
            f = option_field(name)
            if f.metadata["flag"].python_only:
                values[name] = value
                continue
            if _base_type(f) == "dict" and isinstance(value, str):
                try:
                    example = repr(parse_literals([value]) if name != "conf" else parse_kv([value], name))
                except ElearnError:
                    example = "{'key': value}"
                raise ElearnError(f"{name}={value!r}: pass a dict, {name}={example} (KEY=VALUE "
                                  f"strings are {f.metadata['flag'].flag(f.name)}'s form on the command line)")
            try:
                values[name] = coerce(f, value)
            except ElearnError as exc:  # "--ps must be ..." -> "ps= must be ..."
                raise ElearnError(str(exc).replace(f.metadata["flag"].flag(f.name), f"{name}=", 1)) from None
        return cls(**values).checked()

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


def keywords_source() -> str:
    """The text of ``elearn/driver/keywords.py``: ``submit``'s keywords as a TypedDict, written from
    the fields above so that type checkers and IDEs see the options table itself.

    Why generated rather than written: a TypedDict is the only form static checkers read for
    ``**options`` (PEP 692), and they never run code, so it must exist as source; generating it
    keeps this dataclass the one definition (tests/test_api_types.py fails when the file is stale;
    ``python -m elearn.driver.options`` rewrites it). At run time ``submit`` carries the same
    keywords in its ``inspect.signature``, built from the fields (``keyword_parameters``).
    """
    import textwrap

    lines = ['"""The keyword arguments of ``elearn.submit``, for type checkers and IDEs.',
             "",
             "Generated from ``elearn.driver.options.SubmitOptions`` by ``python -m elearn.driver.options``;",
             "do not edit. tests/test_api_types.py fails when it is out of date.",
             '"""',
             "from __future__ import annotations",
             "",
             "from typing import TYPE_CHECKING, Any, TypedDict",
             "",
             "if TYPE_CHECKING:",
             "    from pyspark.sql import SparkSession",
             "",
             "",
             "class SubmitKeywords(TypedDict, total=False):",
             '    """``elearn.submit(job, **options)``: every option of ``pl_submit``, in Python form."""',
             ""]
    for f in fields(SubmitOptions):
        kind = "dict[str, Any]" if _base_type(f) == "dict" else str(f.type)
        flag = f.metadata["flag"]
        where = "Python only" if flag.python_only else flag.flag(f.name)
        default = {} if _base_type(f) == "dict" else f.default
        text = f"{where}: {flag.help}" + ("" if "Default" in flag.help else f" Default: {default!r}.")
        lines += ["    # " + t for t in textwrap.wrap(text, 95)]
        lines.append(f"    {f.name}: {kind}")
    return "\n".join(lines) + "\n"


def keyword_parameters() -> list:
    """``submit``'s keyword parameters (``inspect.Parameter``), with the options' defaults."""
    import inspect

    out = []
    for f in fields(SubmitOptions):
        default = {} if _base_type(f) == "dict" else f.default
        kind = "dict[str, Any]" if _base_type(f) == "dict" else str(f.type)
        out.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                     annotation=kind))
    return out


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


def python_suggestion(keyword: str, known: list[str]) -> str:
    """``"did you mean workers=?"`` for a mistyped keyword of ``submit``; spark-submit's names (as
    keywords: ``num_executors=``) are told their ``conf=`` or keyword form."""
    import difflib

    flag_hint = SPARK_SUBMIT_FLAGS.get("--" + keyword.replace("_", "-"))
    if flag_hint:
        # "--conf spark.executor.instances=N" -> conf={"spark.executor.instances": N}
        hint = re.sub(r"--conf ([\w.]+)=(\S+)", r"conf={'\1': \2}", flag_hint)
        hint = hint.replace("pl_submit takes it as", "pass it as")
        return re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", "_") + "=", hint)
    close = difflib.get_close_matches(keyword, known, n=1, cutoff=0.6)
    return f"did you mean {close[0]}=?" if close else ""


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


# The environment variables elearn reads on the driver (pl_submit --help lists them). Variables it
# sets for its own processes (ELEARN_NODE, ELEARN_TF_LOG, ...) are not the user's to set.
ENVIRONMENT = (
    ("ELEARN_HOME", "where application directories (apps/), the list of running applications and "
                    "packed environments (envs/) are kept. Default: ~/.elearn"),
    ("ELEARN_HOST", "the address of this host that nodes on other hosts reach it at (the embedded "
                    "ZooKeeper, the PS coordinator, the file service). Default: the address Spark's "
                    "executors reach the driver at (spark.driver.host)"),
    ("ELEARN_JVM_CACHE", "directory of the driver JVM's class-data archive, or off. Default: "
                         "$XDG_CACHE_HOME/elearn/jvm (~/.cache/elearn/jvm)"),
    ("ELEARN_PACK_LEVEL", "gzip level (0-9) of archives packed by --venv and --conda-env; 0 packs "
                          "several times faster into an archive about 3x bigger. Default: 1"),
    ("JAVA_HOME", "the Java (17) that runs Spark (and the embedded ZooKeeper when java is not on "
                  "PATH). Default: java on PATH"),
    ("PYSPARK_PYTHON", "an absolute path: the executors' interpreter when no environment is shipped. "
                       "Default: this driver's interpreter"),
    ("CONDA_EXE", "the conda that resolves --conda-env NAME. Default: conda on PATH"),
    ("TF_CPP_MIN_LOG_LEVEL, GRPC_VERBOSITY", "TensorFlow's and gRPC's own log levels. Default: "
                                              "quiet (3, NONE) unless --tf-log"),
    ("AWS_*, GOOGLE_APPLICATION_CREDENTIALS, AZURE_*, HADOOP_CONF_DIR, CLASSPATH",
     "credentials and configuration of s3://, gs://, abfs:// and hdfs:// locations (docs/storage.md)"),
)


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


__all__ = ["SubmitOptions", "Flag", "GROUPS", "ENVIRONMENT", "option_fields", "coerce", "suggestion",
           "python_suggestion", "elearn_home",
           "parse_kv", "parse_literals"]


if __name__ == "__main__":  # rewrite elearn/driver/keywords.py from the fields above
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "keywords.py"), "w") as out:
        out.write(keywords_source())
