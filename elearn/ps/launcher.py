"""PS mode on the driver: launch the PS and worker Spark jobs, form the cluster, coordinate ``train``.

The two jobs run concurrently from driver threads (different executors may serve them, see the
design note); their tasks meet in ZooKeeper. The driver waits for every node with a timeout, then
publishes the TF cluster spec with itself as ``chief`` and runs ``train(ctx)`` under
``ParameterServerStrategy``.
"""
from __future__ import annotations

import json
import logging
import os
import threading

from elearn.context import TrainContext
from elearn.errors import ClusterError
from elearn.export import export_model
from elearn.feed import FeedInfo
from elearn.procs import free_port
from elearn.ps.tasks import STATS_SCHEMA, ps_task, worker_arrow_task, worker_task
from elearn.registry import wait_until
from elearn.runtime.daemon import FINAL_STATES
from elearn.tfimport import import_tensorflow

log = logging.getLogger(__name__)


class _SparkJob(threading.Thread):
    def __init__(self, app, name: str, body):
        super().__init__(name=f"elearn-{name}-job", daemon=True)
        self.app, self.body, self.role = app, body, name
        self.result, self.error = None, None

    def run(self):
        sc = self.app.spark.sparkContext
        sc.setJobGroup(f"{self.app.id}-{self.role}", f"elearn {self.role} nodes of {self.app.id}",
                       interruptOnCancel=True)
        try:
            self.result = self.body()
        except Exception as exc:  # reported by the driver's waits
            self.error = exc


def _launch(app, frame, plan, node_app: dict, ps: int, workers: int) -> None:
    sc = app.spark.sparkContext

    def ps_body():
        rdd = sc.parallelize(range(ps), ps)
        return rdd.mapPartitionsWithIndex(lambda i, _: [ps_task(node_app, i)]).collect()

    def worker_body():
        if frame is None:
            rdd = sc.parallelize(range(workers), workers)
            return rdd.mapPartitionsWithIndex(lambda i, _: [worker_task(node_app, plan, i, [])]).collect()
        rows = frame.mapInArrow(worker_arrow_task(node_app, plan), STATS_SCHEMA).collect()
        return [json.loads(r.stats) for r in rows]

    for name, body in (("ps", ps_body), ("worker", worker_body)):
        job = _SparkJob(app, name, body)
        app.threads.append(job)
        job.start()


def _check_jobs(app) -> None:
    for job in app.threads:
        if job.error is not None:
            raise ClusterError(f"the {job.role} Spark job failed before the cluster formed: "
                               f"{_spark_message(job.error)}") from job.error
        if not job.is_alive() and job.result is not None:
            raise ClusterError(f"the {job.role} Spark job ended before the cluster formed")


def _spark_message(exc: Exception) -> str:
    text = str(exc)
    for marker in ("ElearnError:", "ClusterError:", "FeedError:"):
        if marker in text:
            return text[text.index(marker):].splitlines()[0]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[:12])


def _missing(registry, ps: int, workers: int, want_states=None) -> list[str]:
    out = []
    for role, n in (("ps", ps), ("worker", workers)):
        nodes = registry.nodes(role)
        for i in range(n):
            if i not in nodes or (want_states and nodes[i].get("state") not in want_states):
                out.append(f"{role}:{i}" + (f" ({nodes[i].get('state')})" if i in nodes else ""))
    return out


def form_cluster(app, ps: int, workers: int) -> dict:
    """Wait for every node, publish the cluster spec, wait for every TF server; returns the nodes."""
    reg, opts, say = app.registry, app.opts, app.console.say
    total = ps + workers
    seen = {"n": -1}

    def registered():
        _check_jobs(app)
        missing = _missing(reg, ps, workers)
        if total - len(missing) != seen["n"]:
            seen["n"] = total - len(missing)
            say(f"nodes registered {seen['n']}/{total}")
        return not missing

    def too_slow():
        missing = _missing(reg, ps, workers)
        return ClusterError(
            f"only {total - len(missing)} of {total} nodes registered within "
            f"{opts.register_timeout:.0f}s; missing {', '.join(missing)}. The cluster needs {total} "
            f"Spark tasks running at once ({ps} ps + {workers} workers): check that the cluster "
            "has that many free task slots (executors x cores / spark.task.cpus), or raise "
            "--register-timeout.")

    wait_until(registered, opts.register_timeout, on_timeout=too_slow)

    def spooled():
        _check_jobs(app)
        return not _missing(reg, ps, workers, want_states={"reserved"})

    wait_until(spooled, opts.feed_timeout, interval=0.3, on_timeout=lambda: ClusterError(
        f"the feed did not finish within {opts.feed_timeout:.0f}s; still waiting for "
        f"{', '.join(_missing(reg, ps, workers, want_states={'reserved'}))}"))
    app.mark("feed")
    nodes = {role: reg.nodes(role) for role in ("ps", "worker")}
    chief_host = "127.0.0.1" if app.single_host else app.spark.conf.get("spark.driver.host")
    spec = {"chief": [f"{chief_host}:{free_port()}"],
            "ps": [f"{nodes['ps'][i]['host']}:{nodes['ps'][i]['port']}" for i in range(ps)],
            "worker": [f"{nodes['worker'][i]['host']}:{nodes['worker'][i]['port']}" for i in range(workers)]}
    reg.publish_cluster(spec)

    def running():
        _check_jobs(app)
        failed = [f"{r}:{i}" for r in ("ps", "worker") for i, n in reg.nodes(r).items()
                  if n.get("state") == "failed"]
        if failed:
            raise ClusterError(f"TF process of {', '.join(failed)} failed to start")
        return not _missing(reg, ps, workers, want_states={"running"})

    wait_until(running, 180, interval=0.2, on_timeout=lambda: ClusterError(
        "TF servers did not start within 180s: " + ", ".join(_missing(reg, ps, workers, {"running"}))))
    say(f"cluster up: {ps} ps, {workers} workers, chief {spec['chief'][0]}")
    app.event("cluster", spec=spec)
    return {"spec": spec, **{r: reg.nodes(r) for r in ("ps", "worker")}}


def build_strategy(spec: dict, partitioner):
    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(spec), task_type="chief", task_id=0, rpc_layer="grpc")
    strategy = tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    return strategy, coordinator


def run_ps(app, job, frame, plan) -> dict:
    """Run ``job`` in PS mode; returns what the result needs (model path, node stats)."""
    opts = app.opts
    node_app = app.node_spec(loopback=app.single_host)
    _launch(app, frame, plan, node_app, opts.ps, opts.workers)
    cluster = form_cluster(app, opts.ps, opts.workers)
    app.mark("register")
    import_tensorflow(None if opts.tf_log else os.path.join(app.dir, "driver-tf.log"))
    import tf_keras

    strategy, coordinator = build_strategy(cluster["spec"], job.variable_partitioner(opts.ps))

    workers = cluster["worker"]
    feeds = {name: FeedInfo.gather(name, plan, [workers[i]["spool"][name] for i in range(opts.workers)])
             for name in plan.names}
    ctx = TrainContext(strategy=strategy, mode="ps", task_type="chief", task_index=0,
                       num_workers=opts.workers, num_ps=opts.ps, checkpoint_dir=app.checkpoint_dir,
                       model_dir=app.model_dir, log_dir=app.log_dir, args=job.args,
                       coordinator=coordinator, keras=tf_keras, feeds=feeds, fill=opts.fill)
    app.console.say("training: train(ctx) runs on the driver as PS-mode coordinator")
    model = app.run_user("train", job.train, ctx)
    app.mark("train")
    path = app.run_user("exporting the model returned by train", export_model, model, app.model_dir)
    if path:
        app.console.say(f"model exported to {path} (load with tf.saved_model.load)")
    return {"model_dir": path, "rows": {n: f.total_rows for n, f in feeds.items()}}


def node_stats(app) -> list:
    out = []
    for job in app.threads:
        if job.result:
            out.extend(job.result)
    return out


__all__ = ["run_ps", "node_stats", "FINAL_STATES"]
