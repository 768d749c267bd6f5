"""The driver's side of the feed: check the DataFrames, and plan the one Spark job that spools them.

All named DataFrames go through a single shuffle into ``workers`` partitions and one
``mapInArrow`` so that each worker task receives its share of every dataset on the host where its
TF process will run. Each dataset's rows are dealt by :mod:`elearn.feed.shares`, so that workers' row
counts differ by at most one whatever the input partitioning. Several frames are wrapped in one
struct column each and unioned; one frame travels as is. Nothing is collected to the driver: the
plan is lazy until the worker job runs on the executors.
"""
from __future__ import annotations

from elearn.errors import FeedError
from elearn.feed.columns import TAG, FeedPlan, plan_columns
from elearn.feed.shares import KEY, deal, share_keys


def normalize_frames(result) -> dict:
    """What ``pre_train`` returned, as ``{name: DataFrame}`` (empty for no feed)."""
    from pyspark.sql import DataFrame

    if result is None:
        return {}
    if isinstance(result, DataFrame):
        return {"train": result}
    if isinstance(result, dict) and result and all(isinstance(v, DataFrame) for v in result.values()):
        bad = [k for k in result if not isinstance(k, str) or not k.isidentifier()]
        if bad:
            raise FeedError(f"pre_train returned a dict with names {bad!r}; use simple string names "
                            "such as 'train' and 'validation'")
        return dict(result)
    kind = type(result).__name__
    if isinstance(result, dict):
        kinds = sorted({type(v).__name__ for v in result.values()}) or ["nothing"]
        kind = f"dict of {', '.join(kinds)}"
    raise FeedError(f"pre_train must return a Spark DataFrame, a dict of named DataFrames, or None; "
                    f"it returned {kind}. Build the features with Spark and return the DataFrame "
                    "(convert pandas with spark.createDataFrame).")


def plan_feed(frames: dict, workers: int, coordination=None):
    """``(frame, plan)``: the DataFrame whose ``mapInArrow`` tasks spool, and what they spool.

    ``coordination`` (an :class:`elearn.feed.shares.Coordination`) deals exact shares; without it, or
    with one worker, Spark's round-robin ``repartition`` spreads the rows.
    """
    from pyspark.sql import functions as F

    if not frames:
        return None, FeedPlan([], {})
    names = sorted(frames, key=lambda n: (n != "train", n))
    columns, selected = {}, {}
    errors = []
    for name in names:
        try:
            cols, exprs = plan_columns(frames[name])
        except FeedError as exc:
            errors.append(f"[{name}] {exc}")
            continue
        columns[name] = [c.to_dict() for c in cols]
        selected[name] = frames[name].select(*exprs)
    if errors:
        raise FeedError("\n".join(errors))
    exact = coordination is not None and workers > 1
    if exact:
        keys = share_keys(workers)
        selected = {name: deal(df, name, workers, keys, coordination) for name, df in selected.items()}
    carried = [F.col(KEY)] if exact else []
    if len(names) == 1:
        frame, single = selected[names[0]], True
    else:
        parts = []
        for k, name in enumerate(names):
            df = selected[name]
            data = [F.col(f"`{c}`") for c in df.columns if c != KEY]
            parts.append(df.select(F.lit(k).cast("tinyint").alias(TAG),
                                   F.struct(*data).alias(f"_elearn_{k}"), *carried))
        frame, single = parts[0], False
        for part in parts[1:]:
            frame = frame.unionByName(part, allowMissingColumns=True)
    plan = FeedPlan(names, columns, single=single)
    if not exact:
        return frame.repartition(workers), plan
    return frame.repartition(workers, KEY).drop(KEY), plan
