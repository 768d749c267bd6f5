"""Recovery that needs no user code: a plain Keras ``fit`` (no callbacks) is checkpointed by elearn
and resumes after a real SIGKILL at the epoch after its last checkpoint, in both modes; its summary
holds the final loss and metrics and the steps the restart lost."""
import json
import math
import os
import signal

import pytest
from conftest import assert_no_orphans, finish, job, lines, start_pl_submit, tf_node, timed_out, trainer

from elearn.cluster.waits import wait_until

pytestmark = pytest.mark.slow

ROWS, BATCH, EPOCHS = 8000, 50, 12
ACCURACY = 0.93


@pytest.mark.parametrize("mode", ["ps", "allreduce"])
def test_a_plain_fit_resumes_after_its_last_checkpoint_when_a_node_is_killed(tmp_path, mode):
    """PS mode (tf_keras): the parameter server is SIGKILLed; allreduce (Keras 3): worker 1's
    training process is. Either way, after at least 3 epochs were checkpointed."""
    out = tmp_path / "out.jsonl"
    ps = ["--ps", 1] if mode == "ps" else ["--ps", 0]
    run = start_pl_submit([job("plain_fit.py"), *ps, "--workers", 2, "--app-name", f"plain-{mode}",
                           "--arg", f"rows={ROWS}", "--arg", f"epochs={EPOCHS}", "--arg", f"out={out}"],
                          tmp_path)
    app_dir = tmp_path / "apps" / f"plain-{mode}"
    events = app_dir / "events.jsonl"
    per_worker = math.ceil(ROWS / 2 / BATCH)
    steps_per_epoch = 2 * per_worker if mode == "ps" else per_worker

    def saved():
        return [e for e in lines(events) if e.get("event") == "checkpoint" and "fit-0" in e["path"]]

    wait_until(lambda: len(saved()) >= 3 or run.proc.poll() is not None,
               600, on_timeout=timed_out("three epoch checkpoints"))
    assert run.proc.poll() is None, "training ended before the fault could be injected"
    before = len(saved())
    victim = tf_node(run.tag, "ps", 0) if mode == "ps" else trainer(run.tag, 1)
    assert victim, "the process to kill was not found"
    os.kill(victim, signal.SIGKILL)
    finish(run, timeout=900)
    assert run.returncode == 0, run.output[-4000:]
    assert_no_orphans(run.tag)
    (result,) = lines(out)
    assert result["accuracy"] >= ACCURACY, result
    (restore,) = [e for e in lines(events) if e.get("event") == "restore"]
    # Resumed at the epoch after the last checkpoint taken before the kill (one more may have
    # completed between our reading of the events and the kill), never at the beginning.
    assert before <= restore["epoch"] <= before + 1 and restore["epoch"] >= 3, (before, restore)
    assert restore["step"] == restore["epoch"] * steps_per_epoch
    assert f"fit resumes at epoch {restore['epoch'] + 1} from" in (
        run.stdout + open(app_dir / "nodes" / "logs" / "worker-0.log").read() if mode == "allreduce"
        else run.stdout)
    with open(app_dir / "summary.json") as f:
        summary = json.load(f)
    assert summary["restarts"]["total"] >= 1
    # Lost: the steps of the epoch cut short, never more than one epoch's worth.
    assert 0 <= summary["restarts"]["steps_lost"] < steps_per_epoch
    # A plain fit's summary has its final loss and metrics, reported by elearn's own callback.
    assert summary["steps"] == EPOCHS * steps_per_epoch
    assert summary["metrics"]["loss"] < 0.3 and summary["metrics"]["accuracy"] >= ACCURACY
