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
    """The user's code raised; the traceback is ``__cause__`` or, from another process, ``details``."""

    def __init__(self, message: str, details: str | None = None):
        super().__init__(message)
        self.details = details


class StorageError(ElearnError):
    """A location (a path, ``file://`` mount, object store, HDFS or the driver's file service)
    cannot be used: the message names the location, the cause and the fix."""


class StorageNotFound(StorageError):
    """The file asked for is not at the location (it was never written, or was deleted)."""


class KilledError(ElearnError):
    """The application was stopped on request (``pl_submit kill``)."""
