"""The process that runs the user's ``train(ctx)``, in either mode: ``python -m elearn.train.trainer``.

Started by :class:`elearn.train.launch.TrainerProcess` (PS mode: the coordinator on the driver's
host, TF's chief; allreduce mode: one per worker and attempt). It imports TensorFlow at once, then
reads its ``(TrainSpec, Attempt)`` from stdin — in PS mode the cluster forms meanwhile — builds the
strategy through the mode's backend, builds the :class:`~elearn.train.context.TrainContext` (here
and nowhere else), runs ``train``, exports the model it returns and writes its
:class:`~elearn.train.launch.TrainOutcome` to ``attempt.result``.

Exit codes say whether another attempt could help (``elearn.cluster.restart``): 0 success; 1 a process of
the cluster was lost (a peer, a parameter server); ``EXIT_NOT_RETRYABLE`` the job's own code or input
failed — an ``ImportError`` in the job file, a ``ValueError`` in ``train``, a ``SystemExit`` — which
would fail the same way again.
"""
from __future__ import annotations

import os
import sys
import threading
import time
import traceback

from elearn.cluster.procs import exit_when_parent_goes
from elearn.cluster.restart import EXIT_NOT_RETRYABLE, classify
from elearn.train.launch import HEARTBEAT_ENV, TrainOutcome, read_payload


def _heartbeat(path: str, every: float = 2.0) -> None:
    """Touch ``path`` every ``every`` seconds, so the node task can tell hung from slow."""
    def beat():
        while True:
            with open(path, "a"):
                os.utime(path)
            time.sleep(every)

    threading.Thread(target=beat, name="elearn-heartbeat", daemon=True).start()


def make_context(spec, attempt, strategy, coordinator, job):
    """The ``TrainContext`` of this process: built here, and nowhere else."""
    from elearn.train.context import TrainContext
    from elearn.train.outputs import Outputs

    backend = spec.backend
    keep = backend.is_chief(backend.task_type, attempt.index)
    outputs = Outputs(spec, attempt.staging, keep=keep, scratch=attempt.scratch)
    return TrainContext(
        strategy=strategy, _backend=backend, task_type=backend.task_type, task_index=attempt.index,
        num_workers=spec.num_workers, num_ps=spec.num_ps, checkpoint_dir=outputs.checkpoint_dir,
        model_dir=outputs.model.local, log_dir=outputs.logs.local, args=job.args,
        coordinator=coordinator, keras=backend.keras(), feeds=attempt.feeds, fill=spec.fill or {},
        _outputs=outputs, attempt=attempt.number)


def run(spec, attempt) -> str | None:
    """Run ``train`` for ``attempt``; the exported model's location, if ``train`` returned one."""
    from elearn.train.export import export_model
    from elearn.train.keras_fit import CheckpointEvery, instrument
    from elearn.train.shipping import unpack_job

    for path in spec.sys_path:
        if path not in sys.path:
            sys.path.insert(0, path)
    strategy, coordinator, job = spec.backend.strategy(spec, attempt, lambda: unpack_job(spec.job))
    ctx = make_context(spec, attempt, strategy, coordinator, job)
    instrument(ctx, CheckpointEvery.parse(spec.checkpoint_every))
    for d in (ctx.checkpoint_dir, ctx.log_dir):
        os.makedirs(d, exist_ok=True)
    ctx._record("train_start")
    model = job.train(ctx)
    ctx._record("train_end")
    # Saving may run collectives (allreduce): every worker exports; only the chief's copy is kept.
    exported = export_model(model, ctx.model_dir, options=spec.backend.save_options())
    return ctx._outputs.finish(exported)


def main() -> None:
    from elearn.train.tfimport import import_tensorflow

    if os.environ.get(HEARTBEAT_ENV):
        _heartbeat(os.environ[HEARTBEAT_ENV])
    # TensorFlow first: the mode's environment for it came with the process (TrainerProcess), and
    # its import overlaps whatever the parent still decides before sending the payload.
    import_tensorflow(os.environ.get("ELEARN_TF_IMPORT_LOG"))
    payload = read_payload(sys.stdin.buffer)
    if payload is None:
        os._exit(0)  # the parent went away (or stopped us) before there was anything to run
    spec, attempt = payload
    exit_when_parent_goes(1)
    from elearn.errors import ElearnError

    try:
        outcome = TrainOutcome(True, model_dir=run(spec, attempt))
        code = 0
    except BaseException as exc:  # reported to whoever decides: restart or fail
        kind = "user" if isinstance(exc, ElearnError) else classify(exc)
        text = "".join(traceback.format_exception(exc))
        print(text, file=sys.stderr, flush=True)
        outcome = TrainOutcome(False, kind, f"{exc.__class__.__name__}: {exc}"[:4000], text[-20000:])
        code = 1 if kind == "cluster" else EXIT_NOT_RETRYABLE
    finally:
        if attempt.scratch:
            import shutil

            shutil.rmtree(attempt.scratch, ignore_errors=True)
    outcome.write(attempt.result)
    sys.stdout.flush()
    sys.stderr.flush()
    # TF's coordinator and collective threads can block interpreter exit; the result is on disk.
    os._exit(code)


if __name__ == "__main__":
    main()
