"""elearn: TensorFlow training on the Spark cluster that holds the data.

    from elearn import SparkTFJob, TrainContext, submit
"""
from elearn.context import TrainContext
from elearn.envpack import EnvironmentArchiveError, check_archive, pack_conda, pack_venv
from elearn.errors import ClusterError, ElearnError, FeedError, JobError, KilledError, UserCodeError
from elearn.job import SparkTFJob
from elearn.predict import predict
from elearn.resources_profile import cuda_visible_devices, task_gpu_env
from elearn.runtime.feedspec import sparse_vectors
from elearn.submit import SubmitResult, submit

__all__ = ["SparkTFJob", "TrainContext", "submit", "SubmitResult", "ElearnError", "JobError",
           "FeedError", "ClusterError", "UserCodeError", "KilledError", "sparse_vectors", "check_archive",
           "pack_venv", "pack_conda", "EnvironmentArchiveError", "task_gpu_env", "cuda_visible_devices",
           "predict"]
__version__ = "0.1.0"
