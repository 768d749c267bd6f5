"""Batch scoring on Spark: a DataFrame in, the same DataFrame plus a prediction column out.

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

from elearn.errors import ElearnError

# (model_dir, signature, saved_model.pb mtime) -> the loaded signature function, per Python worker.
_LOADED: dict = {}
_LOCK = threading.Lock()
LOADS = {"count": 0}       # how many models this process has loaded (observable in tests)


def _read_signature(model_dir: str, signature: str):
    """``(inputs, outputs)`` of a SavedModel signature, from saved_model.pb alone (no variables).

    inputs: ``{name: (numpy dtype name, rank)}``; outputs: list of output keys.
    """
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
    inputs = {name: (tf.dtypes.as_dtype(t.dtype).as_numpy_dtype.__name__,
                     len(t.tensor_shape.dim) if not t.tensor_shape.unknown_rank else None)
              for name, t in sig.inputs.items()}
    return inputs, sorted(sig.outputs), len(data)


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


def _column_to_numpy(column, dtype: str, rank: int | None, name: str):
    """An Arrow column as the dense array the signature expects (lists padded with zeros)."""
    import numpy as np
    import pyarrow as pa

    if column.null_count:
        raise ElearnError(f"column {name!r} has {column.null_count} nulls in a batch being scored; "
                          f"fill or drop them first (df.na.fill / df.na.drop)")
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        offsets = column.offsets.to_numpy()
        values = column.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
        lengths = np.diff(offsets)
        width = max(int(lengths.max()) if len(lengths) else 0, 1)
        out = np.zeros((len(column), width), dtype)
        rows = np.repeat(np.arange(len(column)), lengths)
        cols = np.arange(len(values)) - np.repeat(offsets[:-1] - offsets[0], lengths)
        out[rows, cols] = values
        return out
    values = column.to_numpy(zero_copy_only=False)
    if dtype == "object":       # tf.string
        return values.astype(object)
    values = values.astype(dtype, copy=False)
    return values.reshape(-1, 1) if rank == 2 else values


def _scorer(source: _Source, signature: str, inputs: dict[str, tuple[str, int | None]],
            columns: dict, output: str,
            output_col: str, batch_size: int):
    def score(batches):
        import numpy as np
        import pyarrow as pa

        fn = _load(source, signature)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            feed = {name: _column_to_numpy(batch.column(columns[name]), *inputs[name],
                                           batch.schema.names[columns[name]]) for name in inputs}
            parts = []
            for start in range(0, batch.num_rows, batch_size):
                chunk = {k: v[start:start + batch_size] for k, v in feed.items()}
                result = fn(**chunk)[output].numpy()
                if result.ndim > 1 and int(np.prod(result.shape[1:])) != 1:
                    raise ElearnError(f"output {output!r} has shape {list(result.shape)} per batch; "
                                      "predict writes one number per row")
                parts.append(result.reshape(-1).astype(np.float64))
            prediction = pa.array(np.concatenate(parts), pa.float64())
            yield pa.RecordBatch.from_arrays(batch.columns + [prediction],
                                             names=batch.schema.names + [output_col])
    return score


def predict(df, model_dir: str, *, output_col: str = "prediction", features: dict | None = None,
            output: str | None = None, signature: str = "serving_default", batch_size: int = 8192):
    """Score ``df`` with the SavedModel in ``model_dir`` on the executors; returns ``df`` + ``output_col``.

    The model's signature inputs are fed from the columns of the same name (``features`` maps
    input name -> column name where they differ). Numeric columns are cast to the input's dtype,
    array columns are padded with zeros to the longest list of each batch. The model must return one
    number per row (``output`` picks the output when the signature has several). ``model_dir`` is
    a path on the driver's host (shipped to the executors by Spark on a cluster) or a URI
    (``s3://``, ``gs://``, ``hdfs://``, ``abfs://``, ``file://``), fetched once per executor::

        scored = elearn.predict(validation_df, result.model_dir)
        scored.select(F.sqrt(F.avg((F.col("prediction") - F.col("rating")) ** 2))).show()

    Lazy like any DataFrame transformation: nothing runs until an action.
    """
    from pyspark.sql import types as T

    from elearn.storage.stores import parse_location

    model_dir = parse_location(model_dir).uri
    inputs, outputs, version = _read_signature(model_dir, signature)
    if output is None:
        if len(outputs) != 1:
            raise ElearnError(f"the signature {signature!r} has outputs {outputs}; choose one with output=")
        output = outputs[0]
    elif output not in outputs:
        raise ElearnError(f"output {output!r} is not an output of {signature!r}; outputs: {outputs}")
    if output_col in df.columns:
        raise ElearnError(f"the DataFrame already has a column {output_col!r}; pass output_col=")
    columns = {name: (features or {}).get(name, name) for name in inputs}
    missing = sorted(f"{name} (column {col!r})" if col != name else name
                     for name, col in columns.items() if col not in df.columns)
    if missing:
        raise ElearnError(f"the model's inputs {', '.join(missing)} are not columns of the DataFrame "
                          f"(columns: {', '.join(df.columns)}); rename them or pass features={{input: column}}")
    schema = T.StructType(df.schema.fields + [T.StructField(output_col, T.DoubleType(), True)])
    indexed = {name: df.columns.index(col) for name, col in columns.items()}
    source = _source(df, model_dir, version)
    return df.mapInArrow(_scorer(source, signature, inputs, indexed, output, output_col, batch_size),
                         schema)
