"""Which Spark columns can be fed to TensorFlow, and how each travels.

The driver checks the DataFrame's schema before any Spark job starts and rewrites the few types
TensorFlow has no native twin for (dates, timestamps, small decimals) with Spark expressions, so the
executors only ever see numbers, strings, lists and ML vectors. Unsupported columns fail here, named.

Kinds and their spool blocks (every block is one flat little-endian array, see ``spool``):

    scalar  values[n], valid
    string  offsets[n+1] (int64, from 0), bytes[offsets[n]] (uint8: UTF-8 or binary), valid
    list    values[total] flat, shape, element valid[total] (empty: none null), valid
    strings offsets[total+1], bytes (all elements' UTF-8 or binary), shape, element valid, valid
    sparse  indices[total] (int64), values[total] flat, row_splits[n+1] (int64), valid

A list column's (and a ``strings`` column's) ``shape`` is ``[k]`` (int64) when every row of the
chunk holds ``k`` values and none is null, and its int64 row_splits[n+1] otherwise. ``strings`` is
an ``array<string>`` or ``array<binary>``: the multi-valued categorical feature (tags, categories,
recent items), its elements cut out by offset exactly as a ``string`` column's rows are.

ML vectors travel as ``list`` of float64 (Spark's ``vector_to_array``, dense on the Spark side) unless
the job declared them sparse with :func:`sparse_vectors`: then only their non-zero entries travel,
as a ``struct<size, indices, values>`` column built by JVM expressions (no Python per row).

``valid`` (bool, one byte per row) is empty when the chunk has no nulls in that column.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from elearn.errors import FeedError

BLOCKS = {"scalar": 2, "string": 3, "list": 4, "strings": 5, "sparse": 4}

# Kinds with a value per element and a row's length: arrays of numbers and arrays of strings.
LISTS = ("list", "strings")

# The column telling which named dataset a row belongs to, when several are fed together.
TAG = "_elearn_ds"

# Column metadata key marking a struct column made by sparse_vectors().
SPARSE_MARK = "elearn_sparse_vector"

# Spark simpleString -> numpy/TF dtype name.
_NUMERIC = {
    "tinyint": "int8", "smallint": "int16", "int": "int32", "bigint": "int64",
    "float": "float32", "double": "float64", "boolean": "bool",
}
# Precision a float64 keeps exactly; wider decimals would silently lose digits.
MAX_DECIMAL_PRECISION = 15


@dataclass(frozen=True)
class FeedColumn:
    name: str
    kind: str           # scalar | string | list | strings | sparse
    dtype: str          # numpy dtype name of the values
    source: str         # the Spark type it came from, for messages and docs

    def to_dict(self):
        return asdict(self)

    @staticmethod
    def from_dict(d):
        return FeedColumn(**d)


@dataclass(frozen=True)
class FeedPlan:
    """Which datasets are fed and their columns: shipped to the worker tasks."""

    names: list
    columns: dict                      # name -> [FeedColumn dict]
    single: bool = True

    def feed_columns(self, name) -> list:
        return [FeedColumn.from_dict(c) for c in self.columns[name]]


@dataclass
class FeedInfo:
    """One dataset as spooled across the workers: what ``TrainContext.dataset`` builds readers from."""

    name: str
    columns: list
    dirs: list = field(default_factory=list)        # per worker index
    chunks: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    nulls: dict = field(default_factory=dict)       # column -> total nulls
    list_lengths: dict = field(default_factory=dict)  # column -> (min, max)
    sizes: dict = field(default_factory=dict)       # sparse vector column -> width

    @property
    def total_rows(self) -> int:
        return sum(self.rows)

    @staticmethod
    def gather(name: str, plan: FeedPlan, metas: list) -> "FeedInfo":
        """Merge the per-worker spool metadata (index order) of dataset ``name``."""
        info = FeedInfo(name, plan.feed_columns(name))
        for meta in metas:
            info.dirs.append(meta["dir"])
            info.chunks.append(meta["chunks"])
            info.rows.append(meta["rows"])
            for col, n in meta["nulls"].items():
                info.nulls[col] = info.nulls.get(col, 0) + n
            for col, width in meta.get("sizes", {}).items():
                info.sizes[col] = max(info.sizes.get(col, 0), width)
            for col, (lo, hi) in meta["list_lengths"].items():
                if lo is None:
                    continue
                old = info.list_lengths.get(col)
                info.list_lengths[col] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
        return info


def _element(dt) -> str | None:
    from pyspark.sql import types as T

    if isinstance(dt, T.DecimalType):
        return "float64" if dt.precision <= MAX_DECIMAL_PRECISION else None
    return _NUMERIC.get(dt.simpleString())


def plan_columns(df) -> tuple[list[FeedColumn], list]:
    """The feed columns of ``df`` and the Spark expressions that produce them.

    Raises FeedError naming every unsupported column at once.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    columns, exprs, bad = [], [], []
    for field in df.schema.fields:
        name, dt = field.name, field.dataType
        col = F.col(f"`{name}`")
        source = dt.simpleString()
        if isinstance(dt, T.DateType):
            columns.append(FeedColumn(name, "scalar", "int64", source))
            exprs.append(F.datediff(col, F.lit("1970-01-01").cast("date")).cast("bigint").alias(name))
        elif isinstance(dt, (T.TimestampType, T.TimestampNTZType)):
            columns.append(FeedColumn(name, "scalar", "int64", source))
            exprs.append(F.unix_micros(col.cast("timestamp")).alias(name))
        elif isinstance(dt, T.DecimalType):
            if dt.precision > MAX_DECIMAL_PRECISION:
                bad.append(f"{name} ({source}: more digits than float64 holds; cast it to double "
                           "or a smaller decimal)")
                continue
            columns.append(FeedColumn(name, "scalar", "float64", source))
            exprs.append(col.cast("double").alias(name))
        elif isinstance(dt, (T.StringType, T.BinaryType)):
            columns.append(FeedColumn(name, "string", "object", source))
            exprs.append(col)
        elif isinstance(dt, T.ArrayType) and isinstance(dt.elementType, (T.StringType, T.BinaryType)):
            columns.append(FeedColumn(name, "strings", "object", source))
            exprs.append(col)
        elif isinstance(dt, T.ArrayType):
            elem = _element(dt.elementType)
            if elem is None:
                bad.append(f"{name} ({source}: only arrays of numbers, booleans or strings are fed)")
                continue
            columns.append(FeedColumn(name, "list", elem, source))
            exprs.append(col.cast(T.ArrayType(T.DoubleType())).alias(name)
                         if isinstance(dt.elementType, T.DecimalType) else col)
        elif isinstance(dt, T.StructType) and field.metadata.get(SPARSE_MARK):
            columns.append(FeedColumn(name, "sparse", "float64", "vector (sparse)"))
            exprs.append(col)
        elif _is_vector(dt):
            # VectorUDT has no Arrow type; vector_to_array runs in the JVM and yields its values.
            from pyspark.ml.functions import vector_to_array

            columns.append(FeedColumn(name, "list", "float64", "vector"))
            exprs.append(vector_to_array(col, "float64").alias(name))
        elif _element(dt) is not None:
            columns.append(FeedColumn(name, "scalar", _element(dt), source))
            exprs.append(col)
        elif isinstance(dt, (T.MapType, T.StructType)):
            bad.append(f"{name} ({source}: flatten it into columns in pre_train, e.g. "
                       f"col('{name}.field') or col('{name}')['key'])")
        else:
            bad.append(f"{name} ({source})")
    if bad:
        raise FeedError(
            "these columns cannot be fed to TensorFlow: " + "; ".join(bad) + ". Supported: "
            "numbers, boolean, string, binary, date, timestamp, decimal(p<=15), array<number>, array<string>, "
            "ML Vector (sparse with elearn.sparse_vectors). Drop or convert them in pre_train (select/withColumn).")
    if not columns:
        raise FeedError("the DataFrame has no columns to feed")
    return columns, exprs


def _is_vector(dt) -> bool:
    return type(dt).__name__ == "VectorUDT"


_SPARSE_JSON = "struct<v: struct<type: tinyint, size: int, indices: array<int>, values: array<double>>>"


def sparse_vectors(df, *names: str):
    """Declare ML ``Vector`` columns of ``df`` to travel sparse: only their non-zero entries.

    Use it in ``pre_train`` on columns whose vectors are large and mostly zero (hashed or one-hot
    features); TensorFlow then receives each as a ``tf.SparseTensor`` of shape ``[batch, size]``
    with float64 values (``ctx.dataset(..., dense=["col"])`` densifies it in TensorFlow instead).
    Undeclared vector columns are densified by Spark and arrive as ``[batch, size]`` tensors::

        from elearn import sparse_vectors

        def pre_train(self, spark):
            df = HashingTF(inputCol="words", outputCol="tf", numFeatures=1 << 20).transform(docs)
            return sparse_vectors(df.select("tf", "label"), "tf")

    The conversion runs in the JVM (``to_json``/``from_json`` over the vector's own layout), so no
    Python code runs per row and a sparse vector is never expanded to its full width.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    fields = {f.name: f for f in df.schema.fields}
    for name in names:
        if name not in fields:
            raise FeedError(f"sparse_vectors: no column {name!r}; columns: {', '.join(fields)}")
        if not _is_vector(fields[name].dataType):
            raise FeedError(f"sparse_vectors: column {name!r} is {fields[name].dataType.simpleString()}, "
                            "not an ML Vector (pyspark.ml.linalg)")
    out = df
    for name in names:
        parsed = F.from_json(F.to_json(F.struct(F.col(f"`{name}`").alias("v"))), _SPARSE_JSON)["v"]
        dense = parsed["type"] == 1  # a DenseVector in a sparse column: every position is stored
        width = F.coalesce(parsed["size"], F.size(parsed["values"]))
        indices = F.when(dense, F.sequence(F.lit(0), F.size(parsed["values"]) - 1)).otherwise(
            parsed["indices"])
        indices = F.when(F.size(parsed["values"]) == 0, F.array().cast("array<int>")).otherwise(indices)
        value = F.when(F.col(f"`{name}`").isNull(), F.lit(None)).otherwise(F.struct(
            width.cast(T.IntegerType()).alias("size"),
            indices.cast(T.ArrayType(T.LongType())).alias("indices"),
            parsed["values"].alias("values")))
        out = out.withColumn(name, value.alias(name, metadata={SPARSE_MARK: True}))
    return out
