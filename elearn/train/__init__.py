"""The training process: the one process that runs the user's ``train(ctx)`` (PS mode's coordinator,
allreduce mode's workers), its ``TrainContext``, checkpoints, Keras ``fit`` instrumentation,
progress, outputs and export, and how it is launched."""
