"""Criteo click logs with Spark: read the TSV files, split train/validation, build the features.

``read(spark, paths)`` reads Criteo's format as it is: tab-separated, no header, ``label``,
``I1..I13`` (integer counts), ``C1..C26`` (hashed categorical values), with empty fields where a
value is missing, plus an optional 41st column ``tags`` (comma-separated tokens; absent in real
Criteo files, which then read with no tags).

``features(raw, frequent)`` returns one row per line with the model's inputs:

    label    float          1.0 clicked, 0.0 not
    counts   array<float>   log1p(max(I_j, 0)) for j = 1..13, 0 where missing (13 values)
    C1..C26  string         the value; "__missing__" where empty; "__rare__" where the value was
                            seen fewer than ``min_count`` times in the training rows
    tags     array<string>  the row's tags (at most MAX_TAGS), empty when none

The frequency threshold is Spark's work (``frequent_values``): one aggregation over the training
rows counts every (field, value) pair, and one broadcast join per field maps the values below it to
the shared rare token. Rare values get one row of the embedding tables between them, trained on
all of them, instead of a row each that a handful of clicks would never train.
"""
from __future__ import annotations

import os
import re

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

INTS = [f"I{i}" for i in range(1, 14)]
CATS = [f"C{i}" for i in range(1, 27)]
LABEL, TAGS, COUNTS = "label", "tags", "counts"
SCHEMA = ", ".join([f"{LABEL} int", *(f"{c} bigint" for c in INTS), *(f"{c} string" for c in CATS),
                    f"{TAGS} string"])
MISSING, RARE = "__missing__", "__rare__"
MAX_TAGS = 8
FEATURES = [COUNTS, *CATS, TAGS]
METADATA = ("teacher.json",)      # files beside the data that are not data (the generator's)
_KEY = "_field_value"


def read(spark: SparkSession, paths) -> DataFrame:
    """Criteo TSV lines as typed columns. A line with fewer columns (real Criteo: no tags) gets
    nulls in the missing ones; quoting is off (Criteo has no quotes, a stray one is a value)."""
    return spark.read.csv(paths, sep="\t", schema=SCHEMA, header=False, quote="", mode="PERMISSIVE")


def _natural(path: str):
    """Sort key: day_2 before day_10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", os.path.basename(path))]


def data_files(spark: SparkSession, path: str) -> list[str]:
    """The data files under ``path`` (a file or a directory, local or any filesystem Spark reads),
    in natural name order. Spark lists them without reading them."""
    files = [f for f in spark.read.text(path).inputFiles() if os.path.basename(f) not in METADATA]
    if not files:
        raise FileNotFoundError(f"no data files under {path}")
    return sorted(files, key=_natural)


def split(spark: SparkSession, path: str, validation_fraction: float = 0.1, seed: int = 7):
    """``(train, validation, held_out, how)``: the raw rows of each, the held-out file (None for a
    random split) and a description of the split.

    Several files (Criteo's 1TB release, ``day_0`` .. ``day_23``; the generator's ``day_N.tsv``):
    the last day is validation, the days before it train, as a model is trained on the past and
    judged on the next day. One file (the Kaggle release's ``train.txt``): a seeded random split.
    """
    files = data_files(spark, path)
    if len(files) > 1:
        held_out = files[-1]
        return (read(spark, files[:-1]), read(spark, [held_out]), held_out,
                f"{len(files) - 1} files train, the last ({os.path.basename(held_out)}) validation")
    train, validation = read(spark, files).randomSplit([1 - validation_fraction, validation_fraction], seed=seed)
    return train, validation, None, f"one file, {validation_fraction:.0%} random validation rows (seed {seed})"


def clean(raw: DataFrame) -> DataFrame:
    """Fills and transforms that need no statistics: label as float, the log counts, categorical
    values with missing ones named, tags split. Values are not yet thresholded."""
    def log_count(c):
        # Criteo's counts are heavy-tailed and a few are negative (I2 down to -3): log1p of the
        # non-negative part, with a missing count as 0.
        return F.log1p(F.greatest(F.coalesce(F.col(c).cast("double"), F.lit(0.0)), F.lit(0.0)))

    cats = [F.when(F.col(c).isNull() | (F.col(c) == ""), F.lit(MISSING)).otherwise(F.col(c)).alias(c)
            for c in CATS]
    tags = F.filter(F.split(F.coalesce(F.col(TAGS), F.lit("")), ","), lambda t: t != "")
    return raw.where(F.col(LABEL).isNotNull()).select(
        F.col(LABEL).cast("float").alias(LABEL),
        F.array(*[log_count(c) for c in INTS]).cast("array<float>").alias(COUNTS),
        *cats,
        F.slice(tags, 1, MAX_TAGS).alias(TAGS))


def frequent_values(cleaned_train: DataFrame, min_count: int) -> DataFrame:
    """One column ``_field_value`` ("C3:68fd1e64"): every value seen at least ``min_count`` times
    in its field, counted in one aggregation over all 26 fields."""
    keys = F.array(*[F.concat(F.lit(f"{c}:"), F.col(c)) for c in CATS])
    pairs = cleaned_train.select(F.explode(keys).alias(_KEY))
    return pairs.groupBy(_KEY).count().where(F.col("count") >= min_count).select(_KEY)


def vocabulary_sizes(frequent: DataFrame) -> dict:
    """Frequent values per field (small: one row per field)."""
    rows = frequent.groupBy(F.substring_index(_KEY, ":", 1).alias("field")).count().collect()
    found = {r["field"]: r["count"] for r in rows}
    return {c: found.get(c, 0) for c in CATS}


def apply_threshold(cleaned: DataFrame, frequent: DataFrame) -> DataFrame:
    """Values not in ``frequent`` become ``RARE`` (``MISSING`` stays): a left join per field with
    the broadcast set of frequent values (each join map-side: the rows are not shuffled)."""
    out = cleaned
    for c in CATS:
        key = f"_frequent_{c}"         # a name of its own per join: no column is ambiguous
        keys = F.broadcast(frequent.withColumnRenamed(_KEY, key))
        hit = out.join(keys, F.concat(F.lit(f"{c}:"), F.col(c)) == F.col(key), "left")
        out = hit.select(*[F.when(F.col(key).isNotNull() | (F.col(c) == MISSING), F.col(c))
                           .otherwise(F.lit(RARE)).alias(c) if name == c else F.col(name)
                           for name in cleaned.columns])
    return out


def features(raw: DataFrame, frequent: DataFrame) -> DataFrame:
    """The model's inputs and the label (module docstring)."""
    return apply_threshold(clean(raw), frequent).select(LABEL, *FEATURES)


def train_stats(cleaned_train: DataFrame) -> dict:
    """In one pass over the training rows: ``rows``, ``click_rate``, and each log count's
    ``count_mean`` and ``count_std`` (the model standardises the counts with them)."""
    n = len(INTS)
    row = cleaned_train.select(F.count(F.lit(1)).alias("rows"), F.avg(LABEL).alias("click_rate"),
                               *[F.avg(F.col(COUNTS)[i]).alias(f"m{i}") for i in range(n)],
                               *[F.stddev_pop(F.col(COUNTS)[i]).alias(f"s{i}") for i in range(n)]).first()
    return {"rows": int(row["rows"]), "click_rate": float(row["click_rate"] or 0.0),
            "count_mean": [float(row[f"m{i}"] or 0.0) for i in range(n)],
            "count_std": [float(row[f"s{i}"] or 0.0) for i in range(n)]}
