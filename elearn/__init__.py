"""elearn: TensorFlow training on the Spark cluster that holds the data.

    from elearn import SparkTFJob, TrainContext, submit

The names below load on first use (PEP 562): a TF server or training process that imports one
module of elearn loads that module and what it needs, not the driver's code behind ``submit``.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "SparkTFJob": "elearn.job",
    "TrainContext": "elearn.train.context",
    "submit": "elearn.submit",
    "SubmitResult": "elearn.submit",
    "predict": "elearn.predict",
    "ElearnError": "elearn.errors",
    "JobError": "elearn.errors",
    "FeedError": "elearn.errors",
    "ClusterError": "elearn.errors",
    "UserCodeError": "elearn.errors",
    "KilledError": "elearn.errors",
    "StorageError": "elearn.errors",
    "sparse_vectors": "elearn.feed.columns",
    "check_archive": "elearn.driver.envpack",
    "pack_venv": "elearn.driver.envpack",
    "pack_conda": "elearn.driver.envpack",
    "EnvironmentArchiveError": "elearn.driver.envpack",
    "task_gpu_env": "elearn.runtime.gpus",
    "FieldEmbeddings": "elearn.train.embeddings",
    "hash_ids": "elearn.train.embeddings",
    "cuda_visible_devices": "elearn.runtime.gpus",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'elearn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


class _Package(types.ModuleType):
    """``elearn.submit`` and ``elearn.predict`` are functions defined in modules of the same names.
    Importing such a module (``from elearn.submit import SubmitResult``) makes Python set the
    package's attribute to the module, after which ``elearn.submit(...)`` would call a module;
    the function is kept instead."""

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}" \
                and _EXPORTS.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # what type checkers and IDEs see
    from elearn.driver.envpack import EnvironmentArchiveError, check_archive, pack_conda, pack_venv
    from elearn.errors import (ClusterError, ElearnError, FeedError, JobError, KilledError, StorageError,
                               UserCodeError)
    from elearn.feed.columns import sparse_vectors
    from elearn.job import SparkTFJob
    from elearn.predict import predict
    from elearn.runtime.gpus import cuda_visible_devices, task_gpu_env
    from elearn.submit import SubmitResult, submit
    from elearn.train.context import TrainContext
    from elearn.train.embeddings import FieldEmbeddings, hash_ids
