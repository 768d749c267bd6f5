"""A worker task's side of the feed: route its Arrow batches into one spool per dataset."""
from __future__ import annotations

import os
import shutil

import pyarrow as pa

from elearn.feed.arrays import from_numpy, to_numpy
from elearn.feed.columns import TAG, FeedPlan
from elearn.feed.spool import CHUNK_ROWS, SpoolWriter


def spool_dir(node_dir: str, name: str, index: int) -> str:
    return os.path.join(node_dir, "spool", name, str(index))


def spool_partition(batches, plan: FeedPlan, node_dir: str, index: int,
                    chunk_rows: int = CHUNK_ROWS) -> dict:
    """Stream ``batches`` to disk; returns ``{name: spool meta}`` with each spool's directory."""
    writers = {name: SpoolWriter(spool_dir(node_dir, name, index), plan.feed_columns(name), chunk_rows)
               for name in plan.names}
    try:
        for batch in batches:
            if plan.single:
                writers[plan.names[0]].write(batch)
                continue
            tags = to_numpy(batch.column(TAG))
            for k, name in enumerate(plan.names):
                mask = tags == k
                if not mask.any():
                    continue
                part = batch.filter(from_numpy(mask)).column(f"_elearn_{k}")
                writers[name].write(pa.RecordBatch.from_struct_array(part))
        metas = {}
        for name, writer in writers.items():
            meta = writer.close()
            meta["dir"] = writer.directory
            metas[name] = meta
    except BaseException:
        # A partition that fails half-way leaves no partial spool behind on the executor.
        for writer in writers.values():
            shutil.rmtree(writer.directory, ignore_errors=True)
        raise
    return metas
