"""The one class users subclass, and how a job file is turned into it."""
from __future__ import annotations

import importlib.util
import os
import sys
import uuid

from elearn.errors import JobError
from elearn.lazyimport import tensorflow_deferred


class SparkTFJob:
    """A TensorFlow training job whose features come from Spark.

    Subclass it and implement ``train``; ``pre_train`` and ``shutdown`` are optional::

        class MyJob(SparkTFJob):
            def pre_train(self, spark):
                return spark.read.parquet(self.args["data"])   # a DataFrame, a dict of them, or None
            def train(self, ctx):
                model = ...  # build under ctx.strategy.scope()
                model.fit(ctx.dataset(label="y"), epochs=2, steps_per_epoch=ctx.steps_per_epoch(32))
                return model                                     # exported to ctx.model_dir
            def shutdown(self):
                ...                                              # always called once at the end

    ``self.args`` holds the job's own arguments (``--arg KEY=VALUE``), in all three methods.
    """

    def __init__(self, args: dict | None = None):
        self.args = dict(args or {})

    def pre_train(self, spark):
        """Runs on the driver: build the feature DataFrame(s) with Spark. Return ``None`` for no feed."""
        return None

    def train(self, ctx):
        """The TensorFlow program. ``ctx`` is a :class:`elearn.TrainContext`."""
        raise NotImplementedError(f"{type(self).__name__}.train(ctx) is not implemented")

    def shutdown(self):
        """Release what the job opened. Called exactly once, after success or failure."""

    def post_train(self, spark, model_dir):
        """Runs on the driver after a successful ``train``, with Spark still up and the TF nodes gone.

        ``model_dir`` is the exported model (None if ``train`` returned nothing). Use it for Spark
        work on the result, e.g. batch scoring with ``elearn.predict(df, model_dir)``.
        """

    def variable_partitioner(self, num_ps: int):
        """PS mode: how variables are sharded across parameter servers.

        The default splits any variable of 256 KiB or more across up to ``num_ps`` shards, so
        embedding tables spread over the PS tasks while small weights stay whole. Return ``None``
        to keep every variable on one PS.
        """
        import tensorflow as tf

        return tf.distribute.experimental.partitioners.MinSizePartitioner(
            min_shard_bytes=256 << 10, max_shards=max(1, num_ps))


def load_job_class(path: str, class_name: str | None = None) -> type:
    """The ``SparkTFJob`` subclass defined in the job file ``path``."""
    if not os.path.isfile(path):
        raise JobError(f"job file not found: {path}")
    module_name = f"elearn_job_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        with tensorflow_deferred():  # train's imports are for train's processes, not the driver
            spec.loader.exec_module(module)
    except Exception as exc:
        raise JobError(f"importing {path} failed: {exc.__class__.__name__}: {exc}") from exc
    # isinstance(obj, type) would read a lazy module's __class__ and so load it: look at type(obj).
    found = {name: obj for name, obj in vars(module).items()
             if issubclass(type(obj), type) and issubclass(obj, SparkTFJob) and obj is not SparkTFJob
             and obj.__module__ == module_name}
    if class_name:
        if class_name not in found:
            raise JobError(f"{path} has no SparkTFJob subclass named {class_name!r}"
                           + (f"; it defines {', '.join(sorted(found))}" if found else ""))
        found[class_name]._elearn_source = (os.path.abspath(path), class_name)
        return found[class_name]
    if not found:
        raise JobError(f"{path} defines no subclass of elearn.SparkTFJob; "
                       "write `class MyJob(SparkTFJob): def train(self, ctx): ...`")
    if len(found) > 1:
        raise JobError(f"{path} defines several SparkTFJob subclasses ({', '.join(sorted(found))}); "
                       "choose one with --job-class NAME")
    (name, cls), = found.items()
    cls._elearn_source = (os.path.abspath(path), name)  # how train's processes rebuild it
    return cls
