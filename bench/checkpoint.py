"""How long training is blocked by a checkpoint save: local disk vs S3 with the background upload.

    python bench/checkpoint.py [--mb 128] [--saves 5]

A model of ``--mb`` MiB of float32 variables is saved ``--saves`` times through elearn's
``Checkpointer``, side by side in one run: into a local directory, and into ``s3://`` (moto's S3
server in a child process), where TensorFlow writes to a staging directory and a background thread
uploads each checkpoint (data, index, then the state naming it). Measured per save: the pause
(``save()`` returning, which is what training waits for) and, for S3, the time until the upload of
that checkpoint was complete. Targets: the S3 pause within 1.2x of the local one; the upload done
within 2x of the local save's time.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from s3server import MotoS3, with_env  # noqa: E402


def run(directories, variables, saves: int):
    """Per directory, ``(pauses, uploads)`` in seconds for ``saves`` saves into it. The
    directories take turns at each step, so the machine's noise falls on all of them alike."""
    import tensorflow as tf

    from elearn.train.checkpoint import Checkpointer

    ckpts = [Checkpointer(d, {f"v{i}": v for i, v in enumerate(variables)}, every_steps=1,
                          max_to_keep=2, announce=False) for d in directories]
    times = [([], []) for _ in directories]
    for step in range(1, saves + 1):
        for v in variables:
            v.assign_add(tf.ones_like(v))
        for ckpt, (pauses, uploads) in zip(ckpts, times):
            t0 = time.perf_counter()
            ckpt.save(step)
            pauses.append(time.perf_counter() - t0)
            ckpt.store.flush()           # how long until this checkpoint is stored where it belongs
            uploads.append(time.perf_counter() - t0)
    return times


def raw_copies(local_dir: str, bucket_path: str, times: int) -> list[float]:
    """The floor the server sets: pyarrow's own ``copy_files`` of the last local checkpoint's
    files to the same S3 server, with nothing of elearn's in between."""
    import pyarrow.fs as pafs

    s3, _ = pafs.FileSystem.from_uri(f"s3://{bucket_path}")
    took = []
    for _ in range(times):
        t0 = time.perf_counter()
        pafs.copy_files(local_dir, bucket_path, destination_filesystem=s3)
        took.append(time.perf_counter() - t0)
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=128)
    parser.add_argument("--saves", type=int, default=5)
    args = parser.parse_args()
    import tensorflow as tf

    from elearn.train.outputs import CheckpointStore, reach

    per_var = 8 << 20  # 8 MiB variables, as a model's layers would be
    variables = [tf.Variable(tf.random.uniform([per_var // 4])) for _ in range(args.mb * (1 << 20) // per_var)]
    print(f"model: {len(variables)} variables, {sum(v.shape[0] * 4 for v in variables) / 2**20:.0f} MiB")
    with tempfile.TemporaryDirectory() as tmp:
        s3 = MotoS3(os.path.join(tmp, "moto.log")).start()
        restore = with_env(s3.env())
        try:
            s3.create_bucket("bench")
            store = CheckpointStore(reach("s3://bench/ckpt", os.path.join(tmp, "staging")))
            (local_pauses, _), (s3_pauses, s3_uploads) = run([os.path.join(tmp, "local"), store],
                                                             variables, args.saves)
            raw = raw_copies(os.path.join(tmp, "local"), "bench/raw", args.saves)
        finally:
            restore()
            s3.stop()
    local, remote, upload, floor = (statistics.median(x) for x in (local_pauses, s3_pauses, s3_uploads, raw))
    print(f"\n{'measure (median of ' + str(args.saves) + ' saves)':<42} {'seconds':>8} {'ratio':>7} {'target':>7}")
    print(f"{'local save: training blocked':<42} {local:>8.2f} {'1.00':>7} {'':>7}")
    print(f"{'s3 save: training blocked':<42} {remote:>8.2f} {remote / local:>7.2f} {'1.2':>7}")
    print(f"{'s3 save: until the upload is complete':<42} {upload:>8.2f} {upload / local:>7.2f} {'2.0':>7}")
    print(f"{'pyarrow copy_files of the same files':<42} {floor:>8.2f} {floor / local:>7.2f} {'':>7}")
    print(f"{'upload / pyarrow copy_files':<42} {'':>8} {upload / floor:>7.2f} {'':>7}")


if __name__ == "__main__":
    main()
