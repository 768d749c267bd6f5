"""The PS-mode coordinator process: runs the user's ``train(ctx)`` as TF's ``chief``.

The driver starts it early so that importing TensorFlow overlaps the cluster forming, then hands it
the cluster spec in a config file. Running the coordinator in its own process means a restart after
a parameter server is lost starts from a clean TensorFlow runtime, and the result (or the error,
classified as the cluster's or the user's) comes back as a JSON file.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback

from elearn.procs import exit_when_parent_goes

# Errors that mean "a node went away", not "the user's code is wrong".
CLUSTER_ERRORS = ("UnavailableError", "AbortedError", "CancelledError", "DeadlineExceededError",
                  "PSUnavailableError", "WorkerPreemptionError")


def classify(exc: BaseException) -> str:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ in CLUSTER_ERRORS or "Socket closed" in str(exc) \
                or "failed to connect to all addresses" in str(exc):
            return "cluster"
        exc = exc.__cause__ or exc.__context__
    return "user"


def _write_json(path: str, payload: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f)
    os.replace(tmp, path)


def _wait_config(path: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"no coordinator config at {path} within {timeout:.0f}s")
        time.sleep(0.05)
    with open(path) as f:
        return json.load(f)


def main() -> None:
    config_path = sys.argv[1]
    exit_when_parent_goes(3)
    # Only Keras 2 (tf_keras) trains under ParameterServerStrategy, so `tf.keras` means tf_keras
    # here, like ctx.keras; it also spares importing Keras 3 when the job does not ask for it.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from elearn.tfimport import import_tensorflow

    import_tensorflow(os.environ.get("ELEARN_TF_IMPORT_LOG"))
    import tf_keras

    from elearn.context import TrainContext
    from elearn.export import export_model
    from elearn.feed import FeedInfo
    from elearn.ps.strategy import build_strategy
    from elearn.runtime.feedspec import FeedColumn
    from elearn.shipping import unpack_job

    cfg = _wait_config(config_path, float(os.environ.get("ELEARN_CONFIG_TIMEOUT", "7200")))

    def event(kind, **fields):
        with open(cfg["events"], "a") as f:
            f.write(json.dumps({"time": time.time(), "event": kind, "attempt": cfg["attempt"], **fields}) + "\n")

    result = {"status": "error", "kind": "user"}
    try:
        with open(cfg["job"], "rb") as f:
            job = unpack_job(f.read())
        strategy, coordinator = build_strategy(cfg["spec"], job.variable_partitioner(cfg["num_ps"]))
        feeds = {}
        for name, info in cfg["feeds"].items():
            info = dict(info)
            info["columns"] = [FeedColumn.from_dict(c) for c in info["columns"]]
            info["list_lengths"] = {k: tuple(v) for k, v in info["list_lengths"].items()}
            feeds[name] = FeedInfo(**info)
        ctx = TrainContext(strategy=strategy, mode="ps", task_type="chief", task_index=0,
                           num_workers=cfg["num_workers"], num_ps=cfg["num_ps"],
                           checkpoint_dir=cfg["checkpoint_dir"], model_dir=cfg["model_dir"],
                           log_dir=cfg["log_dir"], args=job.args, coordinator=coordinator,
                           keras=tf_keras, feeds=feeds, fill=cfg["fill"], events=event,
                           metrics_path=cfg.get("metrics"))
        event("train_start")
        model = job.train(ctx)
        event("train_end")
        result = {"status": "ok", "model_dir": export_model(model, cfg["model_dir"])}
    except BaseException as exc:  # reported to the driver, which decides: restart or fail
        result = {"status": "error", "kind": classify(exc),
                  "error": f"{exc.__class__.__name__}: {exc}"[:4000],
                  "traceback": "".join(traceback.format_exception(exc))[-20000:]}
    _write_json(cfg["result"], result)
    sys.stdout.flush()
    sys.stderr.flush()
    # TF's coordinator threads can block interpreter exit; the result is on disk.
    os._exit(0 if result["status"] == "ok" else 1)


if __name__ == "__main__":
    main()
