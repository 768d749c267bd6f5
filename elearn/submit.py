"""``submit``: run a job from Python (a notebook, a script); ``pl_submit`` is a thin layer over it."""
from __future__ import annotations

import inspect
import logging
import os
import shutil
import traceback
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from elearn.backend import Backend
from elearn.driver.app import Application
from elearn.driver.console import Console
from elearn.driver.handles import Trained
from elearn.driver.jobfile import load_job_class
from elearn.driver.options import SubmitOptions, keyword_parameters
from elearn.driver.pyfiles import import_roots, parse_py_files
from elearn.driver.summary import build_summary, summary_lines, write_summary
from elearn.driver.usercode import UserCode
from elearn.errors import ElearnError, JobError, UserCodeError
from elearn.feed.plan import normalize_frames, plan_feed
from elearn.job import SparkTFJob
from elearn.mpi import AllreduceBackend
from elearn.ps import PSBackend

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from elearn.driver.keywords import SubmitKeywords

log = logging.getLogger(__name__)

# What ``submit`` runs: a job file, a SparkTFJob subclass, or an instance of one.
Job = Union[str, "os.PathLike[str]", type[SparkTFJob], SparkTFJob]


@dataclass
class SubmitResult:
    """What ``submit`` returns: ``status`` is ``"succeeded"`` or ``"failed"``.

    ``metrics`` and ``step`` are the last ones ``train`` reported (``ctx.report``, or the progress
    callback every Keras ``fit`` gets); ``summary_path`` is the run's ``summary.json``, which holds
    them with the phases, rows and restarts (``docs/operations.md``).
    """

    status: str
    app_id: str
    app_dir: str
    mode: str
    model_dir: str | None = None
    checkpoint_dir: str | None = None
    error: str | None = None
    traceback: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    rows: dict[str, Any] = field(default_factory=dict)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    step: int | None = None
    summary_path: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


def _resolve_job(job: Job, opts: SubmitOptions) -> SparkTFJob:
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


def submit(job: Job, **options: Unpack[SubmitKeywords]) -> SubmitResult:
    """Run ``job`` (a job file path, a ``SparkTFJob`` subclass, or an instance) to completion.

    Options are those of ``pl_submit`` in Python form, for example::

        result = elearn.submit(MyJob, ps=1, workers=2, args={"epochs": 3})
        print(result.status, result.model_dir)

    Failures in the user's code or the cluster come back as ``status="failed"`` with ``error``
    and ``traceback``; invalid options and job files, and options the checks before the start
    refuse (slots, shapes, environment, locations), raise ``ElearnError`` at once.
    """
    opts = SubmitOptions.from_kwargs(**options)
    _quiet_libraries(opts.tf_log)
    _import_py_files(opts.py_files)
    job = _resolve_job(job, opts)
    app = Application(opts, backend_for(opts), Console(opts.quiet))
    _check(app)
    result = SubmitResult("failed", app.id, app.dir, opts.mode, checkpoint_dir=app.checkpoint_uri)
    trained: Trained | None = None
    interrupted = False
    try:
        with app.interrupts, app:
            app.start()
            app.ship_code(job)
            frame, plan = _pre_train(app, job)
            trained = app.backend.drive(app.handles(job, plan), frame)
            _post_train(app, job, result, trained)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: torn down below; summarised, then re-raised
        result.status, result.error, interrupted = "failed", "interrupted", True
    except Exception as exc:
        _record_failure(result, exc)
    finally:
        _finish(app, job, result)
    _report(app, result, trained)
    if interrupted:
        raise KeyboardInterrupt("interrupted")
    return result


def _check(app: Application) -> None:
    """The application's checks (slots, shapes, environment, locations), before anything starts.

    A refusal is a usage error like a mistyped option: the ``ElearnError`` is raised here, with
    nothing to tear down, no teardown lines or summary printed, and the application directory the
    checks' probes created removed again (one that was there before, a resumed run's, is kept).
    """
    fresh = not os.path.exists(app.dir)
    try:
        app.check()
    except BaseException:
        app.console.quiet = True  # there is nothing to report of a teardown of nothing
        app.close()
        if fresh:
            shutil.rmtree(app.dir, ignore_errors=True)
        raise


# The keywords at run time too (help(), IDEs and notebooks that ask inspect), from the same fields.
submit.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("job", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="Job"),
     *keyword_parameters()], return_annotation="SubmitResult")


def backend_for(opts: SubmitOptions) -> Backend:
    """The mode's backend, chosen once: its configuration and the hooks the shared parts call."""
    if opts.mode == "ps":
        return PSBackend(opts.ps)
    return AllreduceBackend(opts.workers, heartbeat_timeout=opts.heartbeat_timeout)


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

    for root in import_roots(parse_py_files(py_files)):
        if root not in sys.path:
            sys.path.insert(0, root)


def _user_code(app: Application) -> UserCode:
    """The user's driver hooks run once Spark and ZooKeeper are up (pre_train needs the first,
    ``pl_submit kill`` the second)."""
    assert app.ops is not None and app.registry is not None, "Spark and ZooKeeper start first"
    return UserCode(app.id, app.ops, app.registry, app.console)


def _pre_train(app: Application, job: SparkTFJob):
    """The user's features as the feed's frame and plan (lazy: nothing is computed yet)."""
    frames = normalize_frames(_user_code(app).run("pre_train", job.pre_train, app.spark))
    frame, plan = plan_feed(frames, app.opts.workers, app.share_coordination())
    if frames:
        app.console.say("feeding " + ", ".join(f"{n}: {len(plan.columns[n])} columns" for n in plan.names))
    app.journal.mark("pre_train")
    return frame, plan


def _post_train(app: Application, job: SparkTFJob, result: SubmitResult, trained: Trained) -> None:
    """``train`` succeeded: free the nodes, run ``post_train``, tear down, keep the nodes' stats."""
    result.model_dir = trained.model_dir
    result.rows = trained.rows
    app.succeeded()
    if type(job).post_train is not SparkTFJob.post_train:
        app.release_nodes()     # the nodes' task slots are free for post_train's Spark jobs
        _user_code(app).run("post_train", job.post_train, app.spark, result.model_dir)
        app.journal.mark("post_train")
    result.status = "succeeded"
    app.close()
    result.nodes = app.jobs.stats() if app.jobs is not None else []


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
    if "teardown" not in app.journal.timings:
        app.journal.mark("teardown")
    result.timings = dict(app.journal.timings)
    try:
        job.shutdown()
    except Exception as exc:
        app.console.say(f"shutdown() raised {exc.__class__.__name__}: {exc}")
        if result.ok:
            result.status, result.error = "failed", f"shutdown raised {exc!r}"


def _report(app: Application, result: SubmitResult, trained: Trained | None) -> None:
    summary = build_summary(result, app, trained)
    result.metrics, result.step = dict(summary.get("metrics") or {}), summary.get("steps")
    if os.path.isdir(app.dir):
        result.summary_path = write_summary(summary, app.dir)
        app.finish_work_copy()
    for line in summary_lines(summary):
        app.console.say(line)
    if result.ok:
        app.console.say(f"succeeded in {sum(summary['phases'].values()):.1f}s; "
                        f"model: {result.model_dir or '(train returned nothing)'}")
    else:
        app.console.say(f"failed: {result.error}")
