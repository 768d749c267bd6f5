"""Two fixes that let Keras 3 ``Model.fit`` train under a multi-worker MultiWorkerMirroredStrategy.

Keras 3.15 fails there out of the box (keras-team/keras#20585, tensorflow/tensorflow#72388):

* before the first step, ``fit`` builds the model from one batch by *reducing* the distributed
  batch across workers, which MultiWorkerMirroredStrategy cannot do for a nest of tensors. Any
  worker's local batch has the right shapes, so we build from that;
* each step's logs (scalars) are reduced across workers with ``axis=0``, which fails for scalars.
  We reduce scalars without an axis;
* ``steps_per_execution > 1`` runs its steps in a loop over ``get_next_as_optional`` of the
  distributed iterator, which fails to run under this strategy ("You must feed a value for
  placeholder tensor"). ``fit`` runs one step per execution instead, and says so.

Both are applied in the TF child process only, and only change what happens with a multi-worker
collective strategy; single-process training takes Keras's own paths unchanged.
"""
from __future__ import annotations


def apply() -> bool:
    """Patch Keras 3's TensorFlow trainer; returns False when Keras 3 is not installed."""
    try:
        import tensorflow as tf
        from keras.src import tree
        from keras.src.backend.tensorflow import trainer as tft
    except ImportError:
        return False
    if getattr(tft, "_elearn_fixed", False):
        return True
    import warnings

    # ctx.dataset shuffles in the spool reader; Keras 3's fit(shuffle=True) default does not apply
    # to a dataset and says so on every fit, in words the user cannot act on.
    warnings.filterwarnings("ignore", message=r"`shuffle=True` was passed, but will be ignored")
    multi_worker = tft._collective_all_reduce_multi_worker
    original_build = tft.TensorFlowTrainer._maybe_symbolic_build
    original_reduce = tft.reduce_per_replica

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if strategy is None or iterator is None or not multi_worker(strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            batch = next(it)
            data_batch = tree.map_structure(
                lambda x: strategy.experimental_local_results(x)[0]
                if isinstance(x, tf.distribute.DistributedValues) else x, batch)
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not multi_worker(strategy):
            return original_reduce(values, strategy, reduction)

        def mean(v):
            if not (tft._is_per_replica_instance(v) or tf.is_tensor(v)):
                return v
            first = v.values[0] if tft._is_per_replica_instance(v) else v
            scalar = first.shape.rank == 0
            return strategy.reduce("MEAN", v, axis=None if scalar else 0)

        return tree.map_structure(mean, values)

    original_fit = tft.TensorFlowTrainer.fit

    def fit(self, *args, **kwargs):
        strategy = self._distribute_strategy or tf.distribute.get_strategy()
        if multi_worker(strategy) and self.steps_per_execution > 1:
            print(f"[elearn] Keras 3 cannot run steps_per_execution={self.steps_per_execution} on "
                  "several workers; running 1 step per execution", flush=True)
            self.steps_per_execution = 1
        return original_fit(self, *args, **kwargs)

    tft.TensorFlowTrainer.fit = fit
    tft.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    tft.reduce_per_replica = reduce_per_replica
    tft._elearn_fixed = True
    return True
