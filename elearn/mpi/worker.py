"""The TF process of one allreduce worker (``python -m elearn.mpi.worker``).

Started by its Spark task (see ``elearn.mpi.task``) with ``TF_CONFIG`` and ``ELEARN_ALLREDUCE``
naming a pickled payload: the job, the feed, this worker's place and directories. It runs the
user's ``train(ctx)`` under MultiWorkerMirroredStrategy (or Horovod), exports the returned model,
and writes a result file; on an exception it writes the traceback to an error file and exits 1.
A heartbeat thread touches a file so the task can tell a hung process from a slow one.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import threading
import time
import traceback


def _heartbeat(path: str, every: float) -> None:
    def beat():
        while True:
            with open(path, "a"):
                os.utime(path)
            time.sleep(every)

    threading.Thread(target=beat, name="elearn-heartbeat", daemon=True).start()


def _write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def build_strategy(runtime: str, workers: int):
    import tensorflow as tf

    if runtime == "horovod":
        from elearn.mpi.horovod import require_horovod

        require_horovod()
    if workers == 1:
        # No peers: the strategy stays in-process (no gRPC server, no collective round trips).
        os.environ.pop("TF_CONFIG", None)
    return tf.distribute.MultiWorkerMirroredStrategy()


def _events(payload: dict):
    path = payload.get("events")
    if not path or payload["index"] != 0:
        return None

    def event(kind, **fields):
        with open(path, "a") as f:
            f.write(json.dumps({"time": time.time(), "event": kind, "attempt": payload["attempt"],
                                **fields}) + "\n")
    return event


def run(payload: dict) -> dict:
    from elearn.context import TrainContext
    from elearn.export import export_model
    from elearn.feed import FeedInfo
    from elearn.mpi import keras_fixes
    from elearn.shipping import unpack_job

    for path in payload.get("sys_path", []):
        if path not in sys.path:
            sys.path.insert(0, path)
    index, workers = payload["index"], payload["workers"]
    strategy = build_strategy(payload.get("runtime", "tf"), workers)
    import keras

    keras_fixes.apply()
    job = unpack_job(payload["job"])
    plan, metas = payload["plan"], payload["metas"]
    feeds = {name: FeedInfo.gather(name, plan, [metas[w][name] for w in range(workers)])
             for name in plan.names}
    chief = index == 0
    scratch = payload["scratch"]
    ctx = TrainContext(
        strategy=strategy, mode="allreduce", task_type="worker", task_index=index,
        num_workers=workers, num_ps=0,
        checkpoint_dir=payload["checkpoint_dir"] if chief else os.path.join(scratch, "checkpoints"),
        model_dir=payload["model_dir"] if chief else os.path.join(scratch, "model"),
        log_dir=payload["log_dir"] if chief else os.path.join(scratch, "tensorboard"),
        args=job.args, keras=keras, feeds=feeds, fill=payload.get("fill") or {},
        local_worker=index, chief_checkpoint_dir=payload["checkpoint_dir"],
        metrics_path=payload.get("metrics"), events=_events(payload))
    for d in (ctx.checkpoint_dir, ctx.log_dir):
        os.makedirs(d, exist_ok=True)
    model = job.train(ctx)
    # Saving may run collectives: every worker saves, only the chief's copy is kept.
    path = export_model(model, ctx.model_dir)
    return {"model_dir": path if chief else None}


def main() -> None:
    with open(os.environ["ELEARN_ALLREDUCE"], "rb") as f:
        payload = pickle.load(f)
    _heartbeat(payload["heartbeat"], payload.get("heartbeat_every", 2.0))
    print(f"=== worker {payload['index']} of {payload['workers']}, attempt {payload['attempt']}, "
          f"pid {os.getpid()}", flush=True)
    from elearn.errors import ElearnError
    from elearn.mpi.restarts import EXIT_NOT_RETRYABLE

    try:
        result = run(payload)
    except BaseException as exc:  # the task reports this text as the worker's error
        text = "".join(traceback.format_exception(exc))
        print(text, file=sys.stderr, flush=True)
        _write(payload["error"], text)
        code = EXIT_NOT_RETRYABLE if isinstance(exc, ElearnError) else 1
    else:
        _write(payload["result"], json.dumps(result))
        code = 0
    finally:
        if payload["index"] != 0:
            shutil.rmtree(payload["scratch"], ignore_errors=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # The collective runtime's threads can stall interpreter exit; everything is written.
    os._exit(code)


if __name__ == "__main__":
    main()
