"""The one class users subclass."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:  # for type checkers only: this module imports nothing of elearn or Spark
    from pyspark.sql import DataFrame, SparkSession

    from elearn.train.context import TrainContext

# What pre_train returns: one DataFrame (fed as "train"), several by name, or None (nothing fed).
Features = Union["DataFrame", "dict[str, DataFrame]", None]


class SparkTFJob:
    """A TensorFlow training job whose features come from Spark.

    Subclass it and implement ``train``; ``pre_train`` and ``shutdown`` are optional::

        class MyJob(SparkTFJob):
            def pre_train(self, spark):
                return spark.read.parquet(self.args["data"])   # a DataFrame, a dict of them, or None
            def train(self, ctx: TrainContext) -> Any:
                model = ...  # build under ctx.strategy.scope()
                model.fit(ctx.dataset(label="y"), epochs=2, steps_per_epoch=ctx.steps_per_epoch(32))
                return model                                     # exported to ctx.model_dir
            def shutdown(self) -> None:
                ...                                              # always called once at the end

    ``self.args`` holds the job's own arguments (``--arg KEY=VALUE``), in all three methods.
    """

    args: dict[str, Any]

    def __init__(self, args: dict[str, Any] | None = None) -> None:
        self.args = dict(args or {})

    def pre_train(self, spark: SparkSession) -> Features:
        """Runs on the driver: build the feature DataFrame(s) with Spark. Return ``None`` for no feed."""
        return None

    def train(self, ctx: TrainContext) -> Any:
        """The TensorFlow program. ``ctx`` is a :class:`elearn.TrainContext`. A Keras model or
        ``tf.Module`` returned is exported to ``ctx.model_dir``; None exports nothing."""
        raise NotImplementedError(f"{type(self).__name__}.train(ctx) is not implemented")

    def shutdown(self) -> None:
        """Release what the job opened. Called exactly once, after success or failure."""

    def post_train(self, spark: SparkSession, model_dir: str | None) -> None:
        """Runs on the driver after a successful ``train``, with Spark still up and the TF nodes gone.

        ``model_dir`` is the exported model (None if ``train`` returned nothing). Use it for Spark
        work on the result, e.g. batch scoring with ``elearn.predict(df, model_dir)``.
        """

    def variable_partitioner(self, num_ps: int) -> Any:
        """PS mode: how variables are sharded across parameter servers.

        The default splits any variable of 256 KiB or more across up to ``num_ps`` shards, so
        embedding tables spread over the PS tasks while small weights stay whole. Return ``None``
        to keep every variable on one PS.
        """
        import tensorflow as tf

        return tf.distribute.experimental.partitioners.MinSizePartitioner(
            min_shard_bytes=256 << 10, max_shards=max(1, num_ps))
