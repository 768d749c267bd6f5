"""ctx.checkpoint(): restore on entry, save on a schedule, and a crash mid-save never leaves an
unreadable "latest" (real TF checkpoints, a real process SIGKILLed while it saves)."""
import os
import signal
import subprocess
import sys
import time

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from elearn.checkpoint import Checkpointer  # noqa: E402

SAVER = r"""
import sys, numpy as np, tensorflow as tf
from elearn.checkpoint import Checkpointer
table = tf.Variable(tf.zeros([8_000_000]))  # 32 MB: a save takes long enough to be cut
ckpt = Checkpointer(sys.argv[1], {"table": table}, every_steps=1, max_to_keep=2)
step = ckpt.step
while True:
    step += 1
    table.assign(tf.fill([8_000_000], float(step)))
    ckpt.save(step)
"""


def test_every_steps_and_every_seconds_decide_when_to_save(tmp_path):
    import tensorflow as tf

    v = tf.Variable(1.0)
    by_steps = Checkpointer(str(tmp_path / "steps"), {"v": v}, every_steps=10)
    assert by_steps.maybe_save(5) is None and by_steps.maybe_save(10) is not None
    assert by_steps.maybe_save(15) is None and by_steps.maybe_save(20).endswith("-20")

    by_time = Checkpointer(str(tmp_path / "time"), {"v": v}, every_seconds=0.5)
    t0 = time.monotonic()
    saved, step = None, 0
    while saved is None:
        step += 1
        saved = by_time.maybe_save(step)
        if saved is None:
            assert time.monotonic() - t0 < 10, "every_seconds never came due"
    assert time.monotonic() - t0 >= 0.5 and saved.endswith(f"-{step}")

    v.assign(7.0)
    again = Checkpointer(str(tmp_path / "time"), {"v": tf.Variable(0.0)}, every_seconds=0.5)
    assert again.step == step and again.restored_from == saved


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.7])
def test_a_process_killed_while_saving_leaves_the_latest_checkpoint_readable(tmp_path, delay):
    import tensorflow as tf

    directory = str(tmp_path / "ckpt")
    index = os.path.join(directory, "checkpoint")
    proc = subprocess.Popen([sys.executable, "-c", SAVER, directory],
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        deadline = time.monotonic() + 120
        while not (os.path.exists(index) and "-2" in open(index).read()):
            assert proc.poll() is None and time.monotonic() < deadline, "no second checkpoint"
            time.sleep(0.05)
        time.sleep(delay)  # a point inside the save loop, not a synchronisation
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    table = tf.Variable(tf.zeros([8_000_000]))
    restored = Checkpointer(directory, {"table": table}, every_steps=1)
    assert restored.step >= 2 and restored.restored_from.endswith(f"-{restored.step}")
    values = table.numpy()
    assert values.min() == values.max() == float(restored.step)  # the whole table, of that step
