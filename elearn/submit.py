"""``submit``: run a job from Python (a notebook, a script); ``pl_submit`` is a thin layer over it."""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
import traceback
from dataclasses import dataclass, field

from elearn.app import Application
from elearn.console import Console
from elearn.config import SubmitOptions
from elearn.errors import ElearnError, JobError, UserCodeError
from elearn.feed import normalize_frames, plan_feed
from elearn.job import SparkTFJob, load_job_class
from elearn.jvmcache import fresh_jvm_class_cache
from elearn.tfimport import stderr_to
from elearn.summary import build_summary, summary_lines, write_summary
from elearn.resources_profile import profile_conf
from elearn.session import build_session, check_slots, cluster_conf, default_master

log = logging.getLogger(__name__)


@dataclass
class SubmitResult:
    """What ``submit`` returns: ``status`` is ``"succeeded"`` or ``"failed"``."""

    status: str
    app_id: str
    app_dir: str
    mode: str
    model_dir: str | None = None
    checkpoint_dir: str | None = None
    error: str | None = None
    traceback: str | None = None
    timings: dict = field(default_factory=dict)
    rows: dict = field(default_factory=dict)
    nodes: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


def _resolve_job(job, opts: SubmitOptions) -> SparkTFJob:
    if isinstance(job, (str, os.PathLike)):
        job = load_job_class(os.fspath(job), opts.job_class)
    if isinstance(job, type):
        if not issubclass(job, SparkTFJob):
            raise JobError(f"{job.__name__} is not a subclass of elearn.SparkTFJob")
        job = job(opts.args)
    elif isinstance(job, SparkTFJob):
        job.args = {**job.args, **opts.args}
    else:
        raise JobError(f"submit() takes a job file, a SparkTFJob subclass or instance; got {type(job).__name__}")
    return job


def submit(job, **options) -> SubmitResult:
    """Run ``job`` (a job file path, a ``SparkTFJob`` subclass, or an instance) to completion.

    Options are those of ``pl_submit`` in Python form, for example::

        result = elearn.submit(MyJob, ps=1, workers=2, args={"epochs": 3})
        print(result.status, result.model_dir)

    Failures in the user's code or the cluster come back as ``status="failed"`` with ``error``
    and ``traceback``; invalid options and job files raise ``ElearnError`` at once.
    """
    opts = SubmitOptions.from_kwargs(**options)
    if not opts.tf_log:
        # TensorFlow's C++ logging is read once, at import: set it before anything imports TF.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    else:  # every process of ours on this host lets TensorFlow's own output through
        os.environ["ELEARN_TF_LOG"] = "1"
    job = _resolve_job(job, opts)
    console = Console(opts.quiet)
    app = Application(opts, console)
    result = SubmitResult("failed", app.id, app.dir, opts.mode, checkpoint_dir=app.checkpoint_dir)
    shutdown_done = interrupted = False
    outputs: dict = {}
    try:
        with app:
            console.say(f"application {app.id} ({opts.mode} mode: {opts.ps} ps, {opts.workers} workers); "
                        f"logs and state in {app.dir}")
            master = opts.master or default_master(opts.ps + opts.workers, opts.max_restarts)
            app.master = master
            check_slots(master, opts.ps, opts.workers,
                        profile_conf(opts, master, opts.mode, opts.conf))  # spark.task.cpus counts
            spark_conf = cluster_conf(opts, master, console.say)
            # ZooKeeper's JVM and Spark's start side by side: both take seconds.
            with ThreadPoolExecutor(1, thread_name_prefix="elearn-zk") as pool:
                zk_started = pool.submit(app.start_zookeeper)
                try:
                    # The JVM inherits this stderr for life: its start-up chatter and later Spark
                    # errors go to spark.log in the application directory (--tf-log: the console).
                    spark_log = None if opts.tf_log else os.path.join(app.dir, "spark.log")
                    app.class_cache = fresh_jvm_class_cache(spark_conf)
                    with stderr_to(spark_log):
                        app.spark = build_session(app.id, master, spark_conf, quiet=not opts.tf_log,
                                                  class_cache=app.class_cache)
                    if app.class_cache is not None and app.class_cache.dumping:
                        console.say("first start of this Spark on this machine: its driver JVM's "
                                    f"classes are saved to {app.class_cache.path} at exit, "
                                    "to start faster next time")
                finally:
                    zk_started.result()
            if opts.tensorboard:
                app.start_tensorboard()
            console.say(f"Spark {app.spark.version} on {master}")
            app.mark("spark")
            frames = normalize_frames(app.run_user("pre_train", job.pre_train, app.spark))
            frame, plan = plan_feed(frames, opts.workers, app.share_coordination())
            if frames:
                console.say("feeding " + ", ".join(f"{n}: {len(plan.columns[n])} columns" for n in plan.names))
            app.mark("pre_train")
            if opts.mode == "ps":
                from elearn.ps.launcher import node_stats, run_ps

                out = run_ps(app, job, frame, plan)
            else:
                from elearn.mpi.launcher import node_stats, run_allreduce

                out = run_allreduce(app, job, frame, plan)
            outputs.update(out)
            result.model_dir = out.get("model_dir")
            result.rows = out.get("rows", {})
            app.succeeded()
            if type(job).post_train is not SparkTFJob.post_train:
                app.release_nodes()     # the nodes' task slots are free for post_train's Spark jobs
                app.run_user("post_train", job.post_train, app.spark, result.model_dir)
                app.mark("post_train")
            result.status = "succeeded"
            app.close()
            result.nodes = node_stats(app)
    except UserCodeError as exc:
        result.error = str(exc)
        result.traceback = exc.details or "".join(traceback.format_exception(exc.__cause__ or exc))
    except ElearnError as exc:  # the message says it all; our internals' traceback would not help
        if result.status != "succeeded":
            result.error = str(exc)
    except Exception as exc:  # a bug of ours or a library's: still report, still tear down
        if result.status != "succeeded":
            result.error = f"{exc.__class__.__name__}: {exc}"
            result.traceback = "".join(traceback.format_exception(exc))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: torn down above; summarised, then re-raised
        result.status = "failed"
        result.error = "interrupted"
        interrupted = True
    finally:
        app.close()
        if "teardown" not in app.timings:
            app.mark("teardown")
        result.timings = dict(app.timings)
        if not shutdown_done:
            shutdown_done = True
            try:
                job.shutdown()
            except Exception as exc:
                console.say(f"shutdown() raised {exc.__class__.__name__}: {exc}")
                if result.ok:
                    result.status, result.error = "failed", f"shutdown raised {exc!r}"
    summary = build_summary(result, app, outputs, outputs.get("per_worker_rows", {}))
    if os.path.isdir(app.dir):
        write_summary(summary, app.dir)
    for line in summary_lines(summary):
        console.say(line)
    if result.ok:
        console.say(f"succeeded in {sum(summary['phases'].values()):.1f}s; "
                    f"model: {result.model_dir or '(train returned nothing)'}")
    else:
        console.say(f"failed: {result.error}")
    if interrupted:
        raise KeyboardInterrupt("interrupted")
    return result
