"""``submit``: run a job from Python (a notebook, a script); ``pl_submit`` is a thin layer over it."""
from __future__ import annotations

import logging
import os
import traceback
import warnings
from dataclasses import dataclass, field

from elearn.app import Application
from elearn.console import Console
from elearn.config import SubmitOptions
from elearn.errors import ElearnError, JobError, UserCodeError
from elearn.feed import normalize_frames, plan_feed
from elearn.nodejobs import node_stats
from elearn.job import SparkTFJob, load_job_class
from elearn.summary import build_summary, summary_lines, write_summary

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
    _quiet_libraries(opts.tf_log)
    _import_py_files(opts.py_files)
    job = _resolve_job(job, opts)
    app = Application(opts, Console(opts.quiet))
    result = SubmitResult("failed", app.id, app.dir, opts.mode, checkpoint_dir=app.checkpoint_dir)
    outputs: dict = {}
    interrupted = False
    try:
        with app:
            app.start()
            app.ship_code(job)
            frame, plan = _pre_train(app, job)
            outputs = app.backend.drive(app, job, frame, plan)
            _post_train(app, job, result, outputs)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: torn down below; summarised, then re-raised
        result.status, result.error, interrupted = "failed", "interrupted", True
    except Exception as exc:
        _record_failure(result, exc)
    finally:
        _finish(app, job, result)
    _report(app, result, outputs)
    if interrupted:
        raise KeyboardInterrupt("interrupted")
    return result


def _quiet_libraries(tf_log: bool) -> None:
    if not tf_log:
        # TensorFlow's C++ logging is read once, at import: set it before anything imports TF.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    else:  # every process of ours on this host lets TensorFlow's own output through
        os.environ["ELEARN_TF_LOG"] = "1"
    # pyspark 4.3 warns at every Arrow UDF that it does not fully support pandas 3; elearn's feed
    # uses Arrow only (never pandas), so the warning is not the user's to act on.
    warnings.filterwarnings("ignore", message=r"PySpark does not yet fully support pandas",
                            category=FutureWarning)


def _import_py_files(py_files: str | None) -> None:
    """``--py-files`` importable here too, before the job file is loaded (as spark-submit does)."""
    import sys

    from elearn.pyfiles import import_roots, parse_py_files

    for root in import_roots(parse_py_files(py_files)):
        if root not in sys.path:
            sys.path.insert(0, root)


def _pre_train(app: Application, job: SparkTFJob):
    """The user's features as the feed's frame and plan (lazy: nothing is computed yet)."""
    frames = normalize_frames(app.run_user("pre_train", job.pre_train, app.spark))
    frame, plan = plan_feed(frames, app.opts.workers, app.share_coordination())
    if frames:
        app.console.say("feeding " + ", ".join(f"{n}: {len(plan.columns[n])} columns" for n in plan.names))
    app.mark("pre_train")
    return frame, plan


def _post_train(app: Application, job: SparkTFJob, result: SubmitResult, outputs: dict) -> None:
    """``train`` succeeded: free the nodes, run ``post_train``, tear down, keep the nodes' stats."""
    result.model_dir = outputs.get("model_dir")
    result.rows = outputs.get("rows", {})
    app.succeeded()
    if type(job).post_train is not SparkTFJob.post_train:
        app.release_nodes()     # the nodes' task slots are free for post_train's Spark jobs
        app.run_user("post_train", job.post_train, app.spark, result.model_dir)
        app.mark("post_train")
    result.status = "succeeded"
    app.close()
    result.nodes = node_stats(app)


def _record_failure(result: SubmitResult, exc: Exception) -> None:
    if isinstance(exc, UserCodeError):
        result.error = str(exc)
        result.traceback = exc.details or "".join(traceback.format_exception(exc.__cause__ or exc))
    elif result.status == "succeeded":
        return  # teardown failed after success: the result stands
    elif isinstance(exc, ElearnError):  # the message says it all; our internals' traceback would not
        result.error = str(exc)
    else:  # a bug of ours or a library's: still report, still tear down
        result.error = f"{exc.__class__.__name__}: {exc}"
        result.traceback = "".join(traceback.format_exception(exc))


def _finish(app: Application, job: SparkTFJob, result: SubmitResult) -> None:
    """Tear down whatever happened, then ``shutdown()``, exactly once."""
    app.close()
    if "teardown" not in app.timings:
        app.mark("teardown")
    result.timings = dict(app.timings)
    try:
        job.shutdown()
    except Exception as exc:
        app.console.say(f"shutdown() raised {exc.__class__.__name__}: {exc}")
        if result.ok:
            result.status, result.error = "failed", f"shutdown raised {exc!r}"


def _report(app: Application, result: SubmitResult, outputs: dict) -> None:
    summary = build_summary(result, app, outputs, outputs.get("per_worker_rows", {}))
    if os.path.isdir(app.dir):
        write_summary(summary, app.dir)
        app.finish_work_copy()
    for line in summary_lines(summary):
        app.console.say(line)
    if result.ok:
        app.console.say(f"succeeded in {sum(summary['phases'].values()):.1f}s; "
                        f"model: {result.model_dir or '(train returned nothing)'}")
    else:
        app.console.say(f"failed: {result.error}")
