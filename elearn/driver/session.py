"""The SparkSession elearn runs on, and how many tasks it can run at once.

elearn runs on the session already running in the process when there is one (a notebook's, or the
one given as ``submit(..., spark=session)``), classic or Spark Connect, as it is, and never stops
it. Otherwise it starts its own (``--master``, or a Spark Connect server's with ``--remote``) and
stops that at the end.
"""
from __future__ import annotations

import logging
import os
import re
import sys

from elearn.driver.envpack import resolve_environment
from elearn.errors import ClusterError

log = logging.getLogger(__name__)

_LOCAL = re.compile(r"local(?:\[(\*|\d+)(?:\s*,\s*(\d+))?\])?$")
_LOCAL_CLUSTER = re.compile(r"local-cluster\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]$")


def default_master(nodes: int, max_restarts: int) -> str:
    # local[K] runs K tasks at once whatever the core count; every node is one long task.
    # local[K,F] lets Spark rerun a node's task whose Python worker died (F attempts).
    return f"local[{max(nodes, 1)},{max(2, max_restarts + 1)}]"


def concurrent_slots(master: str) -> int | None:
    """Tasks the master runs at once, when the master string says; None for real clusters."""
    m = _LOCAL.match(master)
    if m:
        k = m.group(1)
        return os.cpu_count() if k in (None, "*") else int(k)
    m = _LOCAL_CLUSTER.match(master)
    if m:
        return int(m.group(1)) * int(m.group(2))
    return None


def check_slots(master: str, ps: int, workers: int, conf: dict) -> None:
    """Fail before any Spark job when the master cannot run every node at once."""
    slots = concurrent_slots(master)
    if slots is None:
        return
    cpus = max(int(conf.get("spark.task.cpus", 1)), 1)
    cores, slots = slots, slots // cpus
    need = ps + workers
    if need > slots:
        parts = f"{ps} ps + {workers} workers" if ps else f"{workers} workers"
        # The PS job's tasks are submitted first and take their slots; the workers wait on the rest.
        nodes = [f"ps:{i}" for i in range(ps)] + [f"worker:{i}" for i in range(workers)]
        fix = f"local[{need * cpus}]" if master.startswith("local[") or master == "local" else \
            f"local-cluster[N,C,MB] with N x C >= {need * cpus}"
        raise ClusterError(
            f"too few Spark slots: the cluster needs {need} concurrent tasks ({parts}), but "
            f"--master {master} runs {slots} at once ({cores} cores / spark.task.cpus {cpus}): "
            f"{', '.join(nodes[slots:])} would never start, and the nodes that did would wait for "
            f"them. Use --master {fix} (or more), or ask for fewer nodes.")


def running_session(opts):
    """The session to run on instead of starting one (None: elearn starts its own)."""
    if opts.spark is not None:
        return opts.spark
    if opts.remote:
        return None
    try:
        from pyspark.sql import SparkSession

        return SparkSession.active()
    except Exception:  # no session in this process
        return None


def refuse_for_running_session(opts, master: str) -> None:
    """Options that take effect only when elearn starts Spark are refused on a running session,
    naming the fix, rather than silently not applied."""
    given = [flag for flag, value in (("--conf", opts.conf), ("--archives", opts.archives),
                                       ("--venv", opts.venv), ("--conda-env", opts.conda_env),
                                       ("--remote", opts.remote)) if value]
    if opts.master and opts.master != master:
        given.insert(0, f"--master {opts.master}")
    if given:
        raise ClusterError(
            f"elearn runs on the SparkSession already running in this process (master {master}), "
            f"as it is; {', '.join(given)} take effect only when elearn starts Spark itself. Set "
            "them on your session when you build it, or stop that session first (spark.stop()).")


def connect_session(url: str, app_id: str):
    """A Spark Connect session on the server at ``url`` (``sc://host:port``)."""
    try:
        from pyspark.sql import SparkSession

        return SparkSession.builder.remote(url).config("spark.app.name", app_id).getOrCreate()
    except ImportError as exc:
        import pyspark

        raise ClusterError(f"--remote {url} needs pyspark's Spark Connect client ({exc}): pip install "
                           f"'pyspark[connect]=={pyspark.__version__}'") from None


def _inherited_python() -> str | None:
    # A relative PYSPARK_PYTHON (./environment/bin/python) is a previous submit's shipped archive.
    value = os.environ.get("PYSPARK_PYTHON")
    return value if value and os.path.isabs(value) else None


def with_environment(opts, master: str, conf: dict, say=lambda msg: None) -> dict:
    """``conf`` plus what the shipped environment needs (``--archives``, ``--venv``, ``--conda-env``).

    Checks (or packs) the environment here, so a bad archive fails before Spark starts.
    """

    env = resolve_environment(opts.archives, opts.conda_env, opts.venv, master, say)
    if env is None:
        return conf
    # Executors' Python workers, and the TF processes they start, run the unpacked interpreter.
    return {**conf, **env.spark_conf(conf)}


DRIVER_JIT_FLAGS = ("-XX:Tier4InvocationThreshold=50000 -XX:Tier4MinInvocationThreshold=6000 "
                    "-XX:Tier4CompileThreshold=60000 -XX:Tier4BackEdgeThreshold=400000")


def build_session(app_name: str, master: str, conf: dict, quiet: bool = True, class_cache=None):
    """The application's ``SparkSession``; ``class_cache`` (a ``SparkClassCache``) speeds a fresh JVM."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name).master(master)
    settings = {
        "spark.ui.showConsoleProgress": "false",
        "spark.log.structuredLogging.enabled": "false",
        "spark.sql.execution.arrow.maxRecordsPerBatch": "65536",
        # Executors run the driver's interpreter unless an environment is shipped (--archives).
        "spark.pyspark.python": _inherited_python() or sys.executable,
        "spark.pyspark.driver.python": sys.executable,
    }
    # C2 compiles only code that stays hot well past start-up: the driver JVM spends ~25% less
    # CPU starting Spark and running its first small jobs, while long ETL loops still reach C2
    # within milliseconds (a 30M-row aggregation within run-to-run noise; bench/driver_jvm.py).
    driver_opts = [DRIVER_JIT_FLAGS]
    if quiet:
        log4j = os.path.join(os.path.dirname(__file__), "resources", "log4j2.properties")
        driver_opts.append(f"-Dlog4j2.configurationFile=file:{log4j}")
        settings["spark.executor.extraJavaOptions"] = f"-Dlog4j2.configurationFile=file:{log4j}"
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    settings.update(conf)
    # The user's driver JVM options are added after ours, so that theirs win where both set a flag.
    user_opts = conf.get("spark.driver.extraJavaOptions", "")
    # pyspark picks the workers' interpreter from PYSPARK_PYTHON when the context starts.
    os.environ["PYSPARK_PYTHON"] = settings["spark.pyspark.python"]

    def start(cache_opts: str):
        settings["spark.driver.extraJavaOptions"] = " ".join(
            o for o in [*driver_opts, cache_opts, user_opts] if o)
        b = builder
        for k, v in settings.items():
            b = b.config(k, v)
        return b.getOrCreate()

    try:
        spark = start(class_cache.java_options() if class_cache is not None else "")
    except Exception:
        if class_cache is None or not class_cache.in_use:
            raise
        class_cache.discard()  # a damaged archive costs one more JVM start, never the submit
        spark = start("")
    if quiet:
        spark.sparkContext.setLogLevel("ERROR")
    return spark
