"""The process that runs the user's ``train(ctx)``, in either mode: ``python -m elearn.runtime.trainer FILE``.

PS mode starts one on the driver host as TensorFlow's chief (the coordinator), early, so that
TensorFlow imports while the cluster forms; allreduce mode starts one in every worker's Spark task
for each attempt of the group. Either way the process reads a pickled ``(TrainSpec, Attempt)`` from
FILE (waiting for it to appear), builds the strategy through the mode's backend, builds the
:class:`~elearn.context.TrainContext` (here and nowhere else), runs ``train``, exports the model it
returns and writes the outcome as JSON to ``attempt.result``.

Exit codes say whether another attempt could help (``elearn.restart``): 0 success; 1 a process of
the cluster was lost (a peer, a parameter server); ``EXIT_NOT_RETRYABLE`` the job's own code or input
failed — an ``ImportError`` in the job file, a ``ValueError`` in ``train``, a ``SystemExit`` — which
would fail the same way again.
"""
from __future__ import annotations

import os
import pickle
import sys
import threading
import time
import traceback

from elearn.jsonlines import write_json
from elearn.procs import exit_when_parent_goes
from elearn.restart import EXIT_NOT_RETRYABLE, classify


def _wait_file(path: str, timeout: float):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"no training configuration at {path} within {timeout:.0f}s")
        time.sleep(0.05)
    with open(path, "rb") as f:
        return pickle.load(f)


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
    from elearn.context import TrainContext
    from elearn.runtime.outputs import Outputs

    backend = spec.backend
    keep = backend.is_chief(backend.task_type, attempt.index)
    outputs = Outputs(spec, attempt.staging, keep=keep, scratch=attempt.scratch)
    return TrainContext(
        strategy=strategy, backend=backend, task_type=backend.task_type, task_index=attempt.index,
        num_workers=spec.num_workers, num_ps=spec.num_ps, checkpoint_dir=outputs.checkpoint_dir,
        model_dir=outputs.model.local, log_dir=outputs.logs.local, args=job.args,
        coordinator=coordinator, keras=backend.keras(), feeds=attempt.feeds, fill=spec.fill or {},
        outputs=outputs, attempt=attempt.number)


def run(spec, attempt) -> dict:
    """Run ``train`` for ``attempt``; returns what the result file says on success."""
    from elearn.export import export_model
    from elearn.keras_fit import CheckpointEvery, instrument
    from elearn.shipping import unpack_job

    for path in spec.sys_path:
        if path not in sys.path:
            sys.path.insert(0, path)
    strategy, coordinator, job = spec.backend.strategy(spec, attempt, lambda: unpack_job(spec.job))
    ctx = make_context(spec, attempt, strategy, coordinator, job)
    instrument(ctx, CheckpointEvery.parse(spec.checkpoint_every))
    for d in (ctx.checkpoint_dir, ctx.log_dir):
        os.makedirs(d, exist_ok=True)
    ctx.record("train_start")
    model = job.train(ctx)
    ctx.record("train_end")
    # Saving may run collectives (allreduce): every worker exports; only the chief's copy is kept.
    exported = export_model(model, ctx.model_dir, options=spec.backend.save_options())
    return {"model_dir": ctx.outputs.finish(exported)}


def main() -> None:
    exit_when_parent_goes(1)
    spec, attempt = _wait_file(sys.argv[1], float(os.environ.get("ELEARN_CONFIG_TIMEOUT", "7200")))
    spec.backend.prepare_process()
    if attempt.heartbeat:
        _heartbeat(attempt.heartbeat)
    from elearn.tfimport import import_tensorflow

    import_tensorflow(os.environ.get("ELEARN_TF_IMPORT_LOG"))
    from elearn.errors import ElearnError

    try:
        outcome = {"status": "ok", **run(spec, attempt)}
        code = 0
    except BaseException as exc:  # reported to whoever decides: restart or fail
        kind = "user" if isinstance(exc, ElearnError) else classify(exc)
        text = "".join(traceback.format_exception(exc))
        print(text, file=sys.stderr, flush=True)
        outcome = {"status": "error", "kind": kind, "error": f"{exc.__class__.__name__}: {exc}"[:4000],
                   "traceback": text[-20000:]}
        code = 1 if kind == "cluster" else EXIT_NOT_RETRYABLE
    finally:
        if attempt.scratch:
            import shutil

            shutil.rmtree(attempt.scratch, ignore_errors=True)
    write_json(attempt.result, outcome)
    sys.stdout.flush()
    sys.stderr.flush()
    # TF's coordinator and collective threads can block interpreter exit; the result is on disk.
    os._exit(code)


if __name__ == "__main__":
    main()
