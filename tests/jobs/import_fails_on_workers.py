"""A job file whose import fails where train runs (allreduce workers have TF_CONFIG), not on the driver."""
import os

from elearn import SparkTFJob

if "TF_CONFIG" in os.environ:
    import a_module_the_workers_do_not_have  # noqa: F401


class ImportFails(SparkTFJob):
    def train(self, ctx):
        return None
