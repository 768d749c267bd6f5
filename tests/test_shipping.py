"""How the job instance reaches train's processes: attributes that pickle travel, those that
cannot are left out and named, except Spark's driver-side handles, which are expected to stay."""
import threading

from elearn import SparkTFJob
from elearn.train.shipping import pack_job, unpack_job


class Holder(SparkTFJob):
    def train(self, ctx):
        return None


def test_attributes_travel_and_what_cannot_is_named_unless_it_is_a_spark_handle(local_spark, capsys):
    job = Holder({"epochs": 3})
    job.vocab = {"user": 30}
    job.frames = {"train": local_spark.range(3), "validation": local_spark.range(2)}
    job.lock = threading.Lock()
    copy = unpack_job(pack_job(job))
    said = capsys.readouterr().out
    assert copy.args == {"epochs": 3} and copy.vocab == {"user": 30}
    assert not hasattr(copy, "frames") and not hasattr(copy, "lock")
    assert "not shipped to train's processes (cannot be pickled): self.lock;" in said
    assert "frames" not in said
