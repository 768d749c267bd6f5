"""Exact shares: deal a DataFrame's rows to the workers so that their counts differ by at most one.

Spark's round-robin ``repartition(W)`` spreads each input partition evenly but starts each at a
pseudo-random worker, so the ``rows mod W`` left over by every partition land at random and the
spread between workers grows like the square root of the number of input partitions (59 rows for
1,000 partitions over 8 workers). In allreduce mode that is more than a batch of difference.

Here every input partition deals its complete blocks of W rows one row per worker, in a fixed row
order, and its last incomplete block takes consecutive places of one application-wide ZooKeeper
counter (kazoo's ``Counter``), so the leftovers of all partitions go round the workers together.
Nothing counts the rows first: the user's features are computed once.

A map task rerun by Spark (executor loss) must send every row where the first attempt sent it, or
a row would reach two workers and another none. So the rows of a partition are ordered by a 64-bit
hash of their content before dealing (Spark's own round-robin sorts for the same reason), and the
counter place a partition took is recorded under its partition id and reused by any later attempt.
Two different rows of one partition with the same hash could swap on a rerun; at 10 million rows
per partition that chance is about 3 in a million, and it only matters if that partition reruns.

The worker a row goes to travels as a bigint key that Spark's hash partitioner maps to exactly that
worker's partition, so the shuffle itself is Spark's ordinary ``repartition(W, key)``.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from elearn.cluster.registry import Credentials
from elearn.cluster.zookeeper import connect

KEY = "_elearn_share"


@dataclass(frozen=True)
class Coordination:
    """Where the map tasks take and record their places: picklable, shipped to the executors."""

    zk: str                  # as the executors reach it
    credentials: Credentials | None  # the application's (elearn.cluster.registry)
    path: str                # the application's shares znode


def share_keys(workers: int) -> list:
    """``keys[w]``: a bigint that ``repartition(workers, key)`` sends to partition ``w``.

    Spark's hash partitioner puts a row in ``pmod(hash(key), W)``, and ``hash`` of a bigint is
    MurmurHash3 (x86, 32 bit, seed 42) of its 8 little-endian bytes, which ``mmh3`` computes here.
    Asking Spark instead (``SELECT pmod(hash(k), W)`` over an inline table) was the driver's first
    SQL query of a submit, on the critical path before the node jobs (2.3% of a warm start's
    first step, ``bench/bringup.py --timeline``).
    """
    import struct

    import mmh3

    keys: dict = {}
    k = 0
    while len(keys) < workers:
        keys.setdefault(mmh3.hash(struct.pack("<q", k), 42) % workers, k)
        k += 1
    return [keys[w] for w in range(workers)]


def deal(frame, name: str, workers: int, keys: list, coordination: Coordination):
    """``frame`` with a :data:`KEY` column naming each row's worker (as a hash key)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, StructField, StructType

    ordered = frame.sortWithinPartitions(F.xxhash64(*[F.col(f"`{c}`") for c in frame.columns]))
    schema = StructType(frame.schema.fields + [StructField(KEY, LongType(), nullable=False)])
    return ordered.mapInArrow(_dealer(name, workers, keys, coordination), schema)


def _dealer(name, workers, keys, coordination):
    def run(batches):
        import numpy as np
        from pyspark import TaskContext

        from elearn.feed.arrays import from_numpy

        key_of = np.asarray(keys, dtype=np.int64)
        part = TaskContext.get().partitionId()

        def keyed(batches, place):
            for batch in batches:
                places = (place + np.arange(batch.num_rows)) % workers
                yield batch.append_column(KEY, from_numpy(key_of[places]))
                place += batch.num_rows

        # Rows of the current incomplete block (fewer than `workers`), held until it completes.
        held, held_rows, seen = [], 0, 0
        for batch in batches:
            start, seen = seen, seen + batch.num_rows
            take = seen - seen % workers - start        # of this batch, rows in complete blocks
            if take > 0:
                yield from keyed(held + [batch.slice(0, take)], start - held_rows)
                held, held_rows = [], 0
                batch = batch.slice(take)
            if batch.num_rows:
                held.append(batch)
                held_rows += batch.num_rows
        if held_rows:
            yield from keyed(held, take_places(coordination, name, part, held_rows))
    return run


def take_places(coordination: Coordination, name: str, part: int, count: int) -> int:
    """The first of ``count`` consecutive counter places for partition ``part``; the same on reruns."""
    from kazoo.exceptions import NodeExistsError, NoNodeError

    client = _client(coordination)
    record = f"{coordination.path}/{name}/{part}"
    try:
        return int(client.get(record)[0])
    except NoNodeError:
        pass
    acl = coordination.credentials.acl if coordination.credentials is not None else None
    counter_path = f"{coordination.path}/{name}/next"
    client.ensure_path(counter_path, acl=acl)
    counter = client.Counter(counter_path)
    counter += count
    try:
        client.create(record, str(counter.pre_value).encode(), acl=acl)
        return counter.pre_value
    except NodeExistsError:  # a concurrent attempt of the same partition recorded first: follow it
        return int(client.get(record)[0])


_clients: dict = {}
_clients_lock = threading.Lock()


def _client(coordination: Coordination):
    """One ZooKeeper session per Python worker and application, not one per partition."""

    key = (coordination.zk, coordination.credentials)
    with _clients_lock:
        client = _clients.get(key)
        if client is None or not client.connected:
            if client is not None:
                client.stop()
                client.close()
            client = _clients[key] = connect(coordination.zk, coordination.credentials)
        return client
