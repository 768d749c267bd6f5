"""The end-of-run summary: printed for people, written as ``summary.json`` for scripts.

Fields of ``summary.json``:
    app_id, status, mode, ps, workers, error
    phases       seconds per phase in order (start, pre_train, register, feed, train, post_train,
                 teardown; only those that ran). register: until every node's task runs and, in
                 PS mode, until every TF server listens; feed: the workers spooling their rows
    rows         {dataset: {"total": n, "per_worker": [n, ...]}}
    steps        the last step reported by train (ctx.report or the Keras progress callback)
    metrics      the last metrics reported
    restarts     {"total": n, "by_cause": {cause: n}, "steps_lost": n}; causes name the node
                 ("ps:0", "worker:1"), "worker:0 in place" (its node task restarted its TF process
                 while train went on), "zookeeper" (the embedded server restarted), or, in
                 allreduce mode, how the worker's process ended ("killed by SIGKILL")
    model_dir, checkpoint_dir, log_dir, node_logs, events
"""
from __future__ import annotations

import json
import os

from elearn.storage.jsonlines import records

PHASE_NAMES = {"zookeeper": "start", "spark": "start", "pre_train": "pre_train", "feed": "feed",
               "register": "register", "servers": "register", "train": "train", "post_train": "post_train",
               "teardown": "teardown"}


def phase_durations(marks: dict) -> dict:
    """Cumulative marks (seconds since start, in order) -> seconds spent in each phase."""
    out, last = {}, 0.0
    for mark, at in marks.items():
        name = PHASE_NAMES.get(mark, mark)
        out[name] = round(out.get(name, 0.0) + max(0.0, at - last), 3)
        last = at
    return out


def last_metrics(path: str) -> tuple[int | None, dict]:
    step, metrics = None, {}
    for rec in records(path):
        step = rec.get("step", step)
        metrics.update({k: v for k, v in rec.items() if k not in ("step", "time")})
    return step, metrics


def restarts_from_events(path: str) -> dict:
    """Restarts by cause as the events file recorded them (what a failed run has to go on)."""
    causes: dict = {}
    for event in records(path):
        if event.get("event") == "restart":
            key = str(event.get("by") or "unknown")  # the node ("ps:0") or kind ("killed by SIGKILL")
            causes[key] = causes.get(key, 0) + 1
    return {"total": sum(causes.values()), "by_cause": causes}


def zookeeper_restarts(path: str) -> int:
    return sum(1 for event in records(path) if event.get("event") == "zookeeper_restart")


def steps_lost(events_path: str, metrics_path: str) -> int:
    """Steps trained (as reported or checkpointed) that a restart had to do again.

    For each ``restore`` event: the highest step known before it minus the step restored.
    """
    ordered = sorted(list(records(events_path)) + list(records(metrics_path)),
                     key=lambda r: r.get("time", 0))
    lost, high = 0, 0
    for rec in ordered:
        step = rec.get("step")
        if not isinstance(step, int):
            continue
        if rec.get("event") == "restore":
            lost += max(0, high - step)
            high = step
        else:
            high = max(high, step)
    return lost


def build_summary(result, app, trained) -> dict:
    """``trained`` (``elearn.driver.handles.Trained``): what the mode's drive returned, or None when
    it did not return (the restarts are then read from the events)."""
    journal = app.journal
    step, metrics = last_metrics(journal.metrics_path)
    if trained is not None:
        restarts = {"total": trained.restarts, "by_cause": trained.restart_causes}
    else:
        restarts = restarts_from_events(journal.events_path)
    per_worker_rows = trained.per_worker_rows if trained is not None else {}
    zk = zookeeper_restarts(journal.events_path)
    if zk:  # the embedded server died and its supervisor started it again
        restarts = {"total": restarts["total"] + zk, "by_cause": {**restarts["by_cause"], "zookeeper": zk}}
    restarts["steps_lost"] = steps_lost(journal.events_path, journal.metrics_path)
    return {
        "app_id": result.app_id, "status": result.status, "mode": result.mode,
        "ps": app.opts.ps, "workers": app.opts.workers, "error": result.error,
        "phases": phase_durations(result.timings),
        "rows": {name: {"total": total, "per_worker": per_worker_rows.get(name, [])}
                 for name, total in (result.rows or {}).items()},
        "steps": step, "metrics": metrics,
        "restarts": restarts,
        "model_dir": result.model_dir, "checkpoint_dir": app.checkpoint_uri, "log_dir": app.log_dir,
        "node_logs": os.path.join(app.node_dir, "logs"), "events": journal.events_path,
    }


def write_summary(summary: dict, app_dir: str) -> str:
    path = os.path.join(app_dir, "summary.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=2)
    return path


def summary_lines(summary: dict) -> list[str]:
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in summary["phases"].items())
    lines = [f"summary: {summary['status']} ({summary['mode']} mode, {summary['ps']} ps, "
             f"{summary['workers']} workers)", f"  phases: {phases}"]
    for name, rows in summary["rows"].items():
        per = ", ".join(f"{r:,}" for r in rows["per_worker"])
        lines.append(f"  rows fed [{name}]: {rows['total']:,}" + (f" (per worker: {per})" if per else ""))
    if summary["steps"] is not None or summary["metrics"]:
        metrics = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in summary["metrics"].items())
        lines.append(f"  steps: {summary['steps']}" + (f"; final metrics: {metrics}" if metrics else ""))
    r = summary["restarts"]
    causes = ", ".join(f"{k}: {v}" for k, v in r["by_cause"].items())
    lines.append(f"  restarts: {r['total']}" + (f" ({causes})" if causes else "")
                 + (f"; steps lost: {r['steps_lost']}" if r["total"] else ""))
    lines.append(f"  model: {summary['model_dir'] or '-'}; checkpoints: {summary['checkpoint_dir']}")
    lines.append(f"  node logs: {summary['node_logs']}; events: {summary['events']}")
    return lines
