"""Batch scoring on Spark: a DataFrame in, the same DataFrame plus the model's outputs as columns out.

The exported SavedModel is loaded on the executors, once per Spark Python worker (Spark reuses its
Python workers across tasks, and the loaded model stays in the worker's memory), and called on
Arrow record batches through ``mapInArrow`` — rows never travel through the driver.

Where the executors find the model: a URI (``s3://``, ``gs://``, ``hdfs://``, ``abfs://``) is fetched
by each executor once, into a folder of its working directory named after the model, that every
Python worker of the executor then loads from; a ``file://`` directory is read where it is mounted;
a plain path is read directly by a local Spark and, on a cluster, shipped with the job by Spark
itself (zipped, ``addArchive``), since executors on other hosts cannot see the driver's disk.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from elearn.errors import ElearnError

if TYPE_CHECKING:
    from pyspark.sql.types import DataType

# (model_dir, signature, saved_model.pb mtime) -> the loaded signature function, per Python worker.
_LOADED: dict = {}
_LOCK = threading.Lock()
LOADS = {"count": 0}       # how many models this process has loaded (observable in tests)


def _spec(tensor_info, tf) -> tuple[str, tuple | None]:
    """``(numpy dtype name, shape)`` of a signature tensor; shape ``None`` when its rank is unknown,
    an unknown dimension ``None`` ("object" is ``tf.string``)."""
    dtype = tf.dtypes.as_dtype(tensor_info.dtype).as_numpy_dtype.__name__
    if tensor_info.tensor_shape.unknown_rank:
        return dtype, None
    return dtype, tuple(d.size if d.size >= 0 else None for d in tensor_info.tensor_shape.dim)


def _read_signature(model_dir: str, signature: str):
    """``(inputs, outputs, version)`` of a SavedModel signature, from saved_model.pb alone (no
    variables): ``{name: (numpy dtype name, shape)}`` each, and the size of saved_model.pb."""
    from elearn.errors import StorageNotFound
    from elearn.storage.stores import open_storage
    from elearn.train.tfimport import import_tensorflow

    tf = import_tensorflow(os.devnull)  # the driver's console gets no C++ start-up chatter
    from tensorflow.core.protobuf import saved_model_pb2

    try:
        data = open_storage(model_dir).read_bytes("saved_model.pb")
    except StorageNotFound:
        raise ElearnError(f"no SavedModel at {model_dir!r} (saved_model.pb missing): pass the "
                          "directory train's model was exported to (SubmitResult.model_dir)") from None
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(data)
    sigs = proto.meta_graphs[0].signature_def
    if signature not in sigs:
        raise ElearnError(f"the model at {model_dir!r} has no signature {signature!r}; it has "
                          f"{', '.join(sorted(sigs)) or 'none'}")
    sig = sigs[signature]
    inputs = {name: _spec(t, tf) for name, t in sig.inputs.items()}
    outputs = {name: _spec(t, tf) for name, t in sorted(sig.outputs.items())}
    return inputs, outputs, len(data)


@dataclass(frozen=True)
class _Source:
    """How an executor reaches the model: a path it can read, an archive Spark shipped to it
    (by name), or a URI it fetches."""

    path: str | None = None
    shipped: str | None = None
    uri: str | None = None
    version: str = ""    # the size of saved_model.pb: a model exported again is fetched again

    def local_path(self) -> str:
        if self.path is not None:
            return self.path
        if self.shipped is not None:
            from pyspark import SparkFiles

            return os.path.join(SparkFiles.getRootDirectory(), self.shipped)
        assert self.uri is not None  # one of the three is set
        return _fetched(self.uri, self.version)


def _fetched(uri: str, version: str) -> str:
    """The model at ``uri`` in this executor's working directory, fetched by the first Python
    worker that needs it (the others wait for it under a lock file)."""
    import fcntl
    import hashlib

    from elearn.storage.stores import open_storage

    name = hashlib.sha256(f"{uri}\0{version}".encode()).hexdigest()[:16]
    target = os.path.abspath(os.path.join("elearn-models", name))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(target, "saved_model.pb")):
            open_storage(uri).get_tree("", target + ".part")
            os.replace(target + ".part", target)
    return target


def _source(df, model_dir: str, version: int) -> _Source:
    """Where the executors of ``df``'s session will find ``model_dir``."""
    import hashlib
    import shutil
    import tempfile

    from elearn.storage.stores import parse_location

    location = parse_location(model_dir)
    if location.kind == "remote":
        return _Source(uri=location.uri, version=str(version))
    spark = df.sparkSession
    master = spark.conf.get("spark.master", "local") or "local"
    if location.kind == "shared" or (master.startswith("local") and not master.startswith("local-cluster")):
        return _Source(path=location.path)
    # A path on the driver's disk: Spark ships it to every executor, once per model.
    name = "elearn-model-" + hashlib.sha256(f"{location.path}\0{version}".encode()).hexdigest()[:12]
    folder = tempfile.mkdtemp(prefix="elearn-predict-")
    archive = shutil.make_archive(os.path.join(folder, name), "zip", location.path)
    from elearn.driver.sparkops import SparkOps

    SparkOps(spark).add_archive(archive)
    return _Source(shipped=name + ".zip")


def _load(source: _Source, signature: str):
    import tensorflow as tf

    with _LOCK:
        model_dir = source.local_path()
        # A model exported again to the same place is loaded again.
        key = (model_dir, signature, os.stat(os.path.join(model_dir, "saved_model.pb")).st_mtime_ns)
        fn = _LOADED.get(key)
        if fn is None:
            model = tf.saved_model.load(model_dir)
            fn = model.signatures[signature]
            fn._elearn_model = model    # keep the variables alive with the function
            _LOADED[key] = fn
            LOADS["count"] += 1
        return fn


# -- inputs: DataFrame columns -> the tensors the signature takes -------------------------------------

@dataclass(frozen=True)
class _Input:
    """How one signature input is fed: from which column of the scored frame, and as what."""

    name: str             # the signature's input name
    column: str           # the DataFrame column, for messages
    index: int            # its position in the frame mapInArrow reads
    kind: str             # the feed's kind: scalar | string | list | strings | sparse
    dtype: str            # numpy dtype name the input takes ("object": tf.string)
    rank: int | None      # 1 ([b]) or 2 ([b, k]); None when the signature does not say
    width: int | None     # k when the signature fixes it
    vector: bool = False  # an ML Vector: its size must be the input's width


# The Spark types the feed rewrites in the JVM (dates, timestamps, decimals, ML vectors): predict
# feeds them through the feed's own expressions, in hidden columns next to the originals.
def _rewritten(dt) -> bool:
    from pyspark.sql import types as T

    from elearn.feed.columns import _is_vector

    if isinstance(dt, T.ArrayType):
        return isinstance(dt.elementType, T.DecimalType)
    return isinstance(dt, (T.DateType, T.TimestampType, T.TimestampNTZType, T.DecimalType)) or _is_vector(dt)


def _described(dtype: str, shape) -> str:
    """A signature tensor as messages show it: ``float32 [batch, 4]``, ``string [batch]``."""
    dims = "unknown shape" if shape is None else "[" + ", ".join(
        "batch" if i == 0 else str(d) for i, d in enumerate(shape)) + "]"
    return f"{'string' if dtype == 'object' else dtype} {dims}"


def _check_input(name: str, column: str, fc, dtype: str, shape) -> str | None:
    """Why feed column ``fc`` (a ``FeedColumn``) cannot feed input ``name`` of ``dtype``/``shape``,
    with the fix; ``None`` when it can."""
    what = f"input {name!r} ({_described(dtype, shape)}) from column {column!r} ({fc.source})"
    many = fc.kind in ("list", "strings", "sparse")
    if shape is not None and len(shape) not in (1, 2):
        return (f"{what}: predict feeds a column as [batch] or [batch, k]; export a serving signature "
                "whose inputs have one of those shapes")
    if (dtype == "object") != (fc.dtype == "object"):
        if dtype == "object":
            return f"{what}: the input takes strings; cast the column with F.col({column!r}).cast('string')"
        return (f"{what}: a string column cannot feed a numeric input; turn it into numbers in Spark "
                "first (StringIndexer, or .cast('double') for numbers written as text), or feed "
                "another column with features={input: column}")
    if fc.source in ("timestamp", "timestamp_ntz") and dtype not in ("int64", "float64"):
        return (f"{what}: a timestamp is fed as int64 microseconds since 1970-01-01 UTC (as the "
                f"feed does), which {dtype} cannot hold; export the input as int64, or convert the "
                "column in Spark (e.g. F.unix_seconds)")
    rank = None if shape is None else len(shape)
    if many and rank == 1:
        return (f"{what}: the column holds arrays but the input takes one value per row; feed a "
                "column with one value per row, or export the input as [batch, k]")
    if not many and rank == 2 and shape[1] not in (None, 1):
        return (f"{what}: the column holds one value per row but the input takes {shape[1]}; feed "
                f"an array or ML Vector column of {shape[1]} values (F.array(...), VectorAssembler)")
    return None


def _plan_inputs(df, inputs: dict, features: dict | None):
    """The frame mapInArrow reads (``df`` plus the feed's rewrites of its date, timestamp, decimal
    and vector input columns) and how each input is fed from it; every mismatch between the
    signature and the DataFrame is raised here, on the driver, before any Spark job."""
    from elearn.errors import FeedError
    from elearn.feed.columns import plan_columns

    features = dict(features or {})
    unknown = sorted(set(features) - set(inputs))
    if unknown:
        raise ElearnError(f"features= names {', '.join(map(repr, unknown))}, not inputs of the signature "
                          f"(inputs: {', '.join(sorted(inputs))}); map input names to columns")
    columns = {name: features.get(name, name) for name in inputs}
    missing = sorted(f"{name} (column {col!r})" if col != name else name
                     for name, col in columns.items() if col not in df.columns)
    if missing:
        raise ElearnError(f"the model's inputs {', '.join(missing)} are not columns of the DataFrame "
                          f"(columns: {', '.join(df.columns)}); rename them or pass features={{input: column}}")
    fields = {f.name: f for f in df.schema.fields}
    planned: dict = {}
    extra: list = []        # the feed's expressions of the rewritten columns
    problems: list = []
    for col in sorted(set(columns.values())):
        try:
            (fc,), (expr,) = plan_columns(df.select(f"`{col}`"))
        except FeedError:
            users = ", ".join(sorted(repr(n) for n, c in columns.items() if c == col))
            problems.append(f"input {users} from column {col!r} ({fields[col].dataType.simpleString()}): "
                            "predict feeds numbers, boolean, string, binary, date, timestamp, "
                            "decimal(p<=15), arrays of numbers or strings and ML Vectors; convert it "
                            "with select/withColumn first")
            continue
        if _rewritten(fields[col].dataType):
            index = len(df.columns) + len(extra)
            extra.append(expr.alias(f"_elearn_input_{len(extra)}"))
        else:
            index = df.columns.index(col)
        planned[col] = (fc, index)
    plan = []
    for name in sorted(inputs):
        if columns[name] not in planned:
            continue
        fc, index = planned[columns[name]]
        dtype, shape = inputs[name]
        problem = _check_input(name, columns[name], fc, dtype, shape)
        if problem:
            problems.append(problem)
            continue
        plan.append(_Input(name, columns[name], index, fc.kind, dtype,
                           None if shape is None else len(shape),
                           shape[1] if shape is not None and len(shape) == 2 else None,
                           vector=fc.source.startswith("vector")))
    if problems:
        raise ElearnError("the model's signature does not fit the DataFrame: " + "; ".join(problems))
    return (df.select("*", *extra) if extra else df), plan


def _padded(column, inp: _Input, fill):
    """A list column (Arrow) as a dense ``[rows, width]`` array padded with ``fill`` — zeros, or
    empty strings for strings, as the feed pads."""
    import numpy as np

    if column.flatten().null_count:
        raise ElearnError(f"column {inp.column!r} has null elements in a batch being scored; replace "
                          "them first (F.transform(col, lambda x: F.coalesce(x, F.lit(0))))")
    offsets = column.offsets.to_numpy()
    values = column.flatten().to_numpy(zero_copy_only=False)
    lengths = np.diff(offsets)
    longest = int(lengths.max()) if len(lengths) else 0
    if inp.vector and inp.width is not None and len(lengths) and (lengths != inp.width).any():
        size = int(lengths[lengths != inp.width][0])
        raise ElearnError(f"column {inp.column!r} holds vectors of size {size} but input {inp.name!r} "
                          f"takes {inp.width} values per row; score with the features the model was "
                          "trained on")
    if inp.width is not None and longest > inp.width:
        raise ElearnError(f"column {inp.column!r} has a row of {longest} values but input {inp.name!r} "
                          f"takes {inp.width}; cut the arrays in Spark (F.slice(col, 1, {inp.width}))")
    width = inp.width if inp.width is not None else max(longest, 1)
    out = np.full((len(column), width), fill, dtype=inp.dtype)
    rows = np.repeat(np.arange(len(column)), lengths)
    cols = np.arange(len(values)) - np.repeat(offsets[:-1] - offsets[0], lengths)
    out[rows, cols] = values
    return out


def _densified(column, inp: _Input):
    """A vector declared with ``sparse_vectors`` (``struct<size, indices, values>``) as a dense
    ``[rows, size]`` array."""
    import numpy as np

    size, indices, values = column.flatten()
    sizes = size.to_numpy(zero_copy_only=False)
    width = inp.width if inp.width is not None else max(int(sizes.max()) if len(sizes) else 0, 1)
    if len(sizes) and (sizes != width).any():
        raise ElearnError(f"column {inp.column!r} holds vectors of size {int(sizes[sizes != width][0])} "
                          f"but input {inp.name!r} takes {width} values per row; score with the "
                          "features the model was trained on")
    out = np.zeros((len(column), width), dtype=inp.dtype)
    lengths = np.diff(indices.offsets.to_numpy())
    out[np.repeat(np.arange(len(column)), lengths), indices.flatten().to_numpy()] = values.flatten().to_numpy()
    return out


def _tensor(column, inp: _Input):
    """One input of a batch: an Arrow column as the dense array the signature takes."""
    if column.null_count:
        raise ElearnError(f"column {inp.column!r} has {column.null_count} nulls in a batch being scored; "
                          "fill or drop them first (df.na.fill / df.na.drop)")
    if inp.kind == "list":
        return _padded(column, inp, 0)
    if inp.kind == "strings":
        return _padded(column, inp, b"")
    if inp.kind == "sparse":
        return _densified(column, inp)
    values = column.to_numpy(zero_copy_only=False)
    values = values.astype(object) if inp.dtype == "object" else values.astype(inp.dtype, copy=False)
    return values.reshape(-1, 1) if inp.rank == 2 else values


# -- outputs: the tensors the signature returns -> new columns --------------------------------------

# numpy dtype name -> the Spark element type of an array output (the narrowest that holds it).
_ARRAY_ELEMENTS = {
    "float16": "FloatType", "bfloat16": "FloatType", "float32": "FloatType", "float64": "DoubleType",
    "int8": "IntegerType", "int16": "IntegerType", "int32": "IntegerType", "uint8": "IntegerType",
    "uint16": "IntegerType", "int64": "LongType", "uint32": "LongType", "bool": "BooleanType",
    "object": "StringType",
}


@dataclass(frozen=True)
class _Output:
    key: str            # the signature's output name
    column: str         # the new column
    spark_type: DataType  # its Spark type
    array: bool         # [b, k] -> an array per row; [b] or [b, 1] -> one value per row


def _plan_output(key: str, column: str, dtype: str, shape) -> _Output | str:
    """How output ``key`` becomes a column, or why it cannot (with the fix)."""
    what = f"output {key!r} ({_described(dtype, shape)})"
    if dtype not in _ARRAY_ELEMENTS:
        return f"{what}: predict writes numbers, booleans and strings; cast it in the serving signature"
    if shape is None or len(shape) not in (1, 2):
        return (f"{what}: predict writes [batch] or [batch, 1] as one value per row and [batch, k] as "
                "an array per row; reshape it in the serving signature")
    from pyspark.sql import types as T

    if len(shape) == 1 or shape[1] == 1:
        return _Output(key, column, T.StringType() if dtype == "object" else T.DoubleType(), False)
    return _Output(key, column, T.ArrayType(getattr(T, _ARRAY_ELEMENTS[dtype])()), True)


def _column(result, out: _Output, rows: int, arrow_type):
    """One output of a model call as an Arrow array of ``rows`` values."""
    import numpy as np
    import pyarrow as pa

    if result.shape[:1] != (rows,) or (result.ndim != 2 if out.array else result.size != rows):
        raise ElearnError(f"output {out.key!r} returned shape {list(result.shape)} for {rows} rows, "
                          "not the shape its signature declares")
    flat = result.reshape(-1)
    if result.dtype == object:
        try:
            values = pa.array(flat, pa.binary()).cast(pa.string())
        except pa.ArrowInvalid:
            raise ElearnError(f"output {out.key!r} returned bytes that are not UTF-8 text") from None
    else:
        values = pa.array(flat.astype(arrow_type.value_type.to_pandas_dtype() if out.array else np.float64))
    if not out.array:
        return values
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * result.shape[1], pa.int32())
    return pa.ListArray.from_arrays(offsets, values, type=arrow_type)


def _scorer(source: _Source, signature: str, inputs: list, outputs: list, width: int, batch_size: int):
    """The function mapInArrow runs: each batch's first ``width`` columns plus one per output."""
    def score(batches):
        import pyarrow as pa
        from pyspark.sql.pandas.types import to_arrow_type

        fn = _load(source, signature)
        types = [to_arrow_type(out.spark_type) for out in outputs]
        for batch in batches:
            if batch.num_rows == 0:
                continue
            feed = {inp.name: _tensor(batch.column(inp.index), inp) for inp in inputs}
            parts: list = [[] for _ in outputs]
            for start in range(0, batch.num_rows, batch_size):
                chunk = {k: v[start:start + batch_size] for k, v in feed.items()}
                rows = min(batch_size, batch.num_rows - start)
                result = fn(**chunk)
                for part, out, arrow_type in zip(parts, outputs, types):
                    part.append(_column(result[out.key].numpy(), out, rows, arrow_type))
            new = [pa.concat_arrays(part) for part in parts]
            yield pa.RecordBatch.from_arrays(batch.columns[:width] + new,
                                             names=batch.schema.names[:width] + [o.column for o in outputs])
    return score


def predict(df, model_dir: str, *, output_col: str = "prediction", features: dict | None = None,
            output: str | None = None, signature: str = "serving_default", batch_size: int = 8192):
    """Score ``df`` with the SavedModel in ``model_dir`` on the executors; returns ``df`` plus the
    model's outputs as new columns.

    Outputs: a signature with one output (or the one ``output`` names) adds ``output_col``; with
    several and no ``output``, each output ``name`` adds ``<output_col>_<name>``. An output of
    shape ``[batch]`` or ``[batch, 1]`` is a ``double`` column (``string`` for ``tf.string``),
    ``[batch, k]`` an array column (``array<float>`` for float32, ``array<double>`` for float64,
    ``array<int>``/``array<bigint>``, ``array<boolean>``, ``array<string>``).

    Inputs: each signature input is fed from the column of the same name (``features`` maps
    input name -> column name where they differ), converted as elearn's feed converts it: numbers
    cast to the input's dtype, dates as int64 days and timestamps as int64 microseconds since
    1970-01-01 UTC, ML Vectors (dense or sparse) as dense ``[batch, size]``, arrays padded to the
    input's width (zeros, or "" for strings; the longest list of the batch when the signature
    leaves the width open). A signature that does not fit the DataFrame (a missing input, a rank or
    dtype the column cannot give, an unknown output, a ``features`` key that is no input) is refused
    here, before any Spark job.

    ``model_dir`` is a path on the driver's host (shipped to the executors by Spark on a cluster)
    or a URI (``s3://``, ``gs://``, ``hdfs://``, ``abfs://``, ``file://``), fetched once per executor::

        scored = elearn.predict(validation_df, result.model_dir)
        scored.select(F.sqrt(F.avg((F.col("prediction") - F.col("rating")) ** 2))).show()

    Lazy like any DataFrame transformation: nothing runs until an action.
    """
    from pyspark.sql import types as T

    from elearn.storage.stores import parse_location

    model_dir = parse_location(model_dir).uri
    inputs, outputs, version = _read_signature(model_dir, signature)
    if output is not None and output not in outputs:
        raise ElearnError(f"output {output!r} is not an output of {signature!r}; outputs: "
                          f"{', '.join(outputs)}: pass one of them as output=, or leave output unset "
                          f"for one column per output")
    if output is not None or len(outputs) == 1:
        names = {output or next(iter(outputs)): output_col}
    else:
        names = {key: f"{output_col}_{key}" for key in outputs}
    plans = [_plan_output(key, col, *outputs[key]) for key, col in names.items()]
    problems = [p for p in plans if isinstance(p, str)]
    if problems:
        others = "" if output is not None or len(outputs) == 1 else "; or pick one output with output="
        raise ElearnError("the model's outputs cannot be written as columns: " + "; ".join(problems) + others)
    taken = [col for col in names.values() if col in df.columns]
    if taken:
        raise ElearnError(f"the DataFrame already has a column {taken[0]!r}"
                          + (f" (new columns: {', '.join(names.values())})" if len(names) > 1 else "")
                          + "; pass output_col=")
    planned = [p for p in plans if isinstance(p, _Output)]
    staged, plan = _plan_inputs(df, inputs, features)
    new = [T.StructField(out.column, out.spark_type, True) for out in planned]
    schema = T.StructType(df.schema.fields + new)
    source = _source(df, model_dir, version)
    return staged.mapInArrow(_scorer(source, signature, plan, planned, len(df.columns), batch_size), schema)
