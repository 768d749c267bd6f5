"""The examples run end to end with real pl_submit, Spark, ZooKeeper and TF processes:
examples/custom_loop, a hand-written PS training loop (ctx.coordinator.schedule, ctx.checkpoint,
ctx.report). The quickstart runs in test_connect.py and test_multihost.py, the MovieLens FM in
test_fm_job.py."""
import json
import math
import os

import pytest
from conftest import ROOT

CUSTOM_LOOP = os.path.join(ROOT, "examples", "custom_loop", "logistic_loop.py")
TRUE_W, TRUE_B = [1.5, -2.0, 1.0, -0.75], -0.5      # the example's planted weights
NEAR = 0.25     # a fit of 20,000 labels is off by a few hundredths per weight


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_custom_loop_learns_the_planted_logistic_weights(pl_submit):
    import numpy as np
    import tensorflow as tf

    run = pl_submit(CUSTOM_LOOP, "--ps", 1, "--workers", 2, "--register-timeout", 600, timeout=900)
    assert run.returncode == 0, run.output[-4000:]
    (app_dir,) = run.app_dirs()
    model = tf.saved_model.load(os.path.join(app_dir, "model"))
    learned = model.w.numpy().tolist() + [float(model.b.numpy())]
    # The untrained model (all zeros) is not near any planted value, so nearness means trained.
    assert all(abs(v) > NEAR for v in TRUE_W + [TRUE_B])
    for got, want in zip(learned, TRUE_W + [TRUE_B], strict=True):
        assert abs(got - want) < NEAR, learned
    # The exported call is the probability under the learned weights.
    x = np.array([[0, 0, 0, 0], [1, -1, 0.5, 2]], np.float32)
    expected = 1 / (1 + np.exp(-(x @ np.array(learned[:-1]) + learned[-1])))
    assert np.allclose(model(tf.constant(x)).numpy(), expected, atol=1e-5)
    # ctx.report's last step and loss reached the summary: below an untrained model's log 2.
    with open(os.path.join(app_dir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["steps"] == 400 and summary["metrics"]["loss"] < 0.75 * math.log(2), summary
    # ctx.checkpoint's saves, the last one at the final step.
    assert tf.train.latest_checkpoint(os.path.join(app_dir, "checkpoints")).endswith("ckpt-400")
    assert "learned weights" in run.stdout
