"""elearn: TensorFlow training on the Spark cluster that holds the data.

    from elearn import SparkTFJob, TrainContext, submit
"""
from elearn.context import TrainContext
from elearn.errors import ClusterError, ElearnError, FeedError, JobError, UserCodeError
from elearn.job import SparkTFJob
from elearn.runtime.feedspec import sparse_vectors
from elearn.submit import SubmitResult, submit

__all__ = ["SparkTFJob", "TrainContext", "submit", "SubmitResult", "ElearnError", "JobError",
           "FeedError", "ClusterError", "UserCodeError", "sparse_vectors"]
__version__ = "0.1.0"
