"""ctx.checkpoint(): restore on entry, save on a schedule, and a crash mid-save never leaves an
unreadable "latest" (real TF checkpoints, a real process SIGKILLed while it saves)."""
import os
import signal
import sys
import time

import pytest
from conftest import run_saver

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from elearn.train.checkpoint import Checkpointer  # noqa: E402

SAVER = r"""
import sys, numpy as np, tensorflow as tf
from elearn.train.checkpoint import Checkpointer
last = int(sys.argv[2]) or -1  # 0: until killed
table = tf.Variable(tf.zeros([8_000_000]))  # 32 MB: a save takes long enough to be cut
ckpt = Checkpointer(sys.argv[1], {"table": table}, every_steps=1, max_to_keep=2)
step = ckpt.step
while step != last:
    step += 1
    table.assign(tf.fill([8_000_000], float(step)))
    ckpt.save(step)
    print("saved", step, flush=True)
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


def restored(directory):
    """The step a fresh Checkpointer restores from ``directory``, checked whole."""
    import tensorflow as tf

    table = tf.Variable(tf.zeros([8_000_000]))
    ckpt = Checkpointer(directory, {"table": table}, every_steps=1)
    assert ckpt.restored_from.endswith(f"-{ckpt.step}")
    values = table.numpy()
    assert values.min() == values.max() == float(ckpt.step)  # the whole table, of that step
    return ckpt.step


@pytest.mark.parametrize("delay", [0.05, 0.5])
def test_a_process_killed_while_saving_leaves_the_last_saved_checkpoint_readable(tmp_path, delay):
    directory = str(tmp_path / "ckpt")
    code, saved = run_saver([sys.executable, "-c", SAVER, directory, "0"], kill_after=2, delay=delay)
    assert code == -signal.SIGKILL, (code, saved)   # died of the kill, inside a later save
    assert saved[:2] == [1, 2], saved
    # Never older than the last save reported (2, or the one after if it completed meanwhile).
    step = restored(directory)
    assert saved[-1] <= step <= saved[-1] + 1, (step, saved)


def test_control_a_process_left_to_finish_restores_its_last_step(tmp_path):
    directory = str(tmp_path / "ckpt")
    code, saved = run_saver([sys.executable, "-c", SAVER, directory, "3"])
    assert code == 0 and saved == [1, 2, 3], (code, saved)
    assert restored(directory) == 3
