"""Errors elearn raises. Each message names the problem and, where there is one, the fix."""


class ElearnError(Exception):
    """Base class: something about the job, its input or its cluster is wrong."""


class JobError(ElearnError):
    """The job file or job class cannot be used (missing, no subclass, ambiguous)."""


class FeedError(ElearnError):
    """The DataFrame cannot be fed to TensorFlow (unsupported types, nulls, nothing fed)."""


class ClusterError(ElearnError):
    """The TensorFlow cluster could not be formed or lost a node it could not recover."""


class UserCodeError(ElearnError):
    """The user's pre_train/train raised; the original traceback is kept in ``__cause__``."""
