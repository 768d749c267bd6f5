"""Records the CUDA_VISIBLE_DEVICES each worker's TF process runs with (PS mode: the TF servers).

Only this run's servers: they inherit the test's ``ELEARN_TEST_TAG``, as the trainer does."""
import os

from common import linear_frame, record

from elearn import SparkTFJob


def _tf_server_devices():
    mine = os.environ.get("ELEARN_TEST_TAG", "").encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"elearn.runtime.tf_server" not in f.read():
                    continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
        except OSError:
            continue
        if env.get(b"ELEARN_TEST_TAG") == mine and b'"role": "worker"' in env.get(b"ELEARN_NODE", b""):
            found.append(env.get(b"CUDA_VISIBLE_DEVICES", b"").decode())
    return found


class GpuDevices(SparkTFJob):
    def pre_train(self, spark):
        return linear_frame(spark, rows=400, partitions=2)

    def train(self, ctx):
        record(self.args, "out", {"workers": sorted(_tf_server_devices())})
        return None
