"""The keyword arguments of ``elearn.submit``, for type checkers and IDEs.

Generated from ``elearn.driver.options.SubmitOptions`` by ``python -m elearn.driver.options``;
do not edit. tests/test_api_types.py fails when it is out of date.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class SubmitKeywords(TypedDict, total=False):
    """``elearn.submit(job, **options)``: every option of ``pl_submit``, in Python form."""

    # --ps: Parameter servers. N > 0 runs PS mode (ParameterServerStrategy; train runs in a
    # coordinator process on the driver host); 0 runs allreduce mode (MultiWorkerMirroredStrategy,
    # train runs in every worker). Default: 0, allreduce mode.
    ps: int
    # --workers: TF workers; each is one Spark task fed one share of the DataFrame. Default: 1.
    workers: int
    # --remote: Spark Connect server sc://HOST:PORT to run on instead of starting Spark here (as in a
    # notebook's Connect session). Default: Spark starts in this process.
    remote: str | None
    # --master: Spark master URL (local[K], local-cluster[N,C,M], spark://..., yarn, k8s://...).
    # Default: local[ps + workers], enough task slots for every node.
    master: str | None
    # --zk: ZooKeeper HOST:PORT[,HOST:PORT][/chroot] where nodes meet. Default: an embedded server.
    zk: str | None
    # --conf: Spark configuration KEY=VALUE; repeat for more (-c KEY=VALUE, as spark-submit).
    # Default: none beyond what elearn sets.
    conf: dict[str, Any]
    # --archives: Comma-separated archives (.tar.gz, .tgz, .tar, .zip; a path or a URI), as spark-
    # submit: the first is a conda-pack or venv-pack archive shipped as the executors' Python
    # environment (executors and TF processes run its bin/python); any others are unpacked beside it
    # in every executor's working directory, ARCHIVE#NAME naming the folder. Default: none; executors
    # run the interpreter at this driver's path (or PYSPARK_PYTHON).
    archives: str | None
    # --venv: A virtualenv directory packed with venv-pack now and shipped like --archives (cached).
    # Its archive links to the venv's base interpreter, which must exist on every host. Not an
    # editable install (pip install -e): venv-pack refuses it. Default: none.
    venv: str | None
    # --conda-env: A conda environment (name or prefix) packed with conda-pack now and shipped like
    # --archives; the archive is cached by content, so an unchanged environment is packed once.
    # Default: none.
    conda_env: str | None
    # --py-files: Comma-separated .py, .zip and .egg files and package directories put on every
    # node's import path, as spark-submit does. Default: none; the job file's own folder (its .py
    # files) travels anyway.
    py_files: str | None
    # --ps-cores: Cores per PS executor (a ResourceProfile where the cluster manager supports it).
    # Default: the application's executor shape.
    ps_cores: int | None
    # --ps-memory: Memory per PS executor, e.g. 8g. Default: the application's executor shape.
    ps_memory: str | None
    # --worker-cores: Cores per worker executor. Default: Spark's (spark.executor.cores).
    worker_cores: int | None
    # --worker-memory: Memory per worker executor. Default: Spark's (spark.executor.memory).
    worker_memory: str | None
    # --worker-gpus: GPUs per worker task. Default: none.
    worker_gpus: int | None
    # --arg: Job argument KEY=VALUE, in self.args; values parse as Python literals. Repeatable.
    # Default: none.
    args: dict[str, Any]
    # --job-class: Which subclass to run when the file defines several. Default: the file's only
    # SparkTFJob subclass.
    job_class: str | None
    # --app-name: Application id. Re-running with the same name and checkpoint dir resumes. Default:
    # elearn-DATE-TIME-RANDOM.
    app_name: str | None
    # --fill: COLUMN=VALUE used for nulls in that column of every fed dataset. Repeatable. Default:
    # none (nulls are an error).
    fill: dict[str, Any]
    # --checkpoint-dir: Where checkpoints go: a path or a URI (file://, s3://, gs://, hdfs://,
    # abfs://). Default: checkpoints/ in the application directory.
    checkpoint_dir: str | None
    # --model-dir: Where the model returned by train() is exported: a path or a URI (file://, s3://,
    # gs://, hdfs://, abfs://). Default: model/ in the application directory.
    model_dir: str | None
    # --work-dir: Root of the per-application directories (logs, events, summary): a path or a URI
    # (file://, s3://, gs://, hdfs://, abfs://; a URI keeps a copy there). Default: $ELEARN_HOME/apps
    # (~/.elearn/apps).
    work_dir: str | None
    # --checkpoint-every: Checkpoints elearn takes of every Keras fit in train, restored after a
    # restart: epoch, or also every N steps (500) or every so long (90s, 10m, 1h), or off. Default:
    # 'epoch'.
    checkpoint_every: str
    # --register-timeout: Seconds to wait for every node to register before failing. Default: 120.0.
    register_timeout: float
    # --feed-timeout: Seconds to wait for the workers to spool the DataFrame. Default: 3600.0.
    feed_timeout: float
    # --max-restarts: Restarts of a failed node (PS mode) or of the group (allreduce mode). Default:
    # 3.
    max_restarts: int
    # --heartbeat-timeout: Allreduce mode: seconds without a heartbeat from a worker's TF process
    # (frozen, or stuck holding Python's lock) before the group is restarted. Default: 120.0.
    heartbeat_timeout: float
    # --tf-log: Let TensorFlow's and Spark's own log output through (--verbose, as spark-submit).
    # Default: False.
    tf_log: bool
    # Python only: A SparkSession to run on (Python only: submit(..., spark=session)); by default the
    # one already running in the process, if any. Default: None.
    spark: SparkSession | None
    # --tensorboard: Start TensorBoard on the driver over the application's log dir and print its
    # URL. Default: False.
    tensorboard: bool
    # --quiet: Print only errors. Default: False.
    quiet: bool
