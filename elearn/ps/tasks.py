"""The Spark task bodies of PS mode (run on executors)."""
from __future__ import annotations

import json
import shutil
import time

import pyarrow as pa

from elearn.runtime.daemon import NodeDaemon
from elearn.runtime.partition import spool_partition

STATS_SCHEMA = "stats string"


def ps_task(app: dict, index: int) -> dict:
    return NodeDaemon(app, "ps", index).run()


def reporting(batches, daemon: NodeDaemon, every: float = 2.0):
    """Pass ``batches`` through, publishing rows and bytes seen so far on the node's znode."""
    rows = nbytes = 0
    t0 = last = time.monotonic()
    for batch in batches:
        rows += batch.num_rows
        nbytes += batch.nbytes
        yield batch
        now = time.monotonic()
        if now - last >= every:
            last = now
            try:
                daemon.announce("spooling", feed={"rows": rows, "bytes": nbytes,
                                                  "seconds": round(now - t0, 2)})
            except Exception:  # progress is best effort; the feed itself must go on
                pass


def worker_task(app: dict, plan, index: int, batches) -> dict:
    daemon = NodeDaemon(app, "worker", index)
    daemon.connect()
    daemon.start_child()
    daemon.announce("spooling")
    metas = {}
    try:
        t0 = time.monotonic()
        try:
            metas = spool_partition(reporting(batches, daemon), plan, app["node_dir"], index) \
                if plan.names else {}
        except BaseException:
            daemon.stop_child()  # the Python worker lives on; its TF child must not
            raise
        for meta in metas.values():
            meta["seconds"] = round(time.monotonic() - t0, 3)
        daemon.extra = {"spool": metas, "rows": sum(m["rows"] for m in metas.values())}
        return daemon.run()
    finally:
        for meta in metas.values():  # the spool lives as long as the node, also on failure
            shutil.rmtree(meta["dir"], ignore_errors=True)


def worker_arrow_task(app: dict, plan):
    """The ``mapInArrow`` function of the worker job."""
    def run(batches):
        from pyspark import TaskContext

        stats = worker_task(app, plan, TaskContext.get().partitionId(), batches)
        yield pa.RecordBatch.from_pydict({"stats": [json.dumps(stats)]})
    return run
