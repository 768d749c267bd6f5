"""Export of PS-mode models whose variables are sharded across parameter servers.

A real ``pl_submit --ps 2 --workers 1`` run (Spark local, ZooKeeper, TF servers) trains a tf_keras
model whose embedding tables are split over both parameter servers and exports it, plus a
``tf.Module`` and a subclassed tf_keras model with sharded tables; a separate plain Python process,
with no strategy, loads the three SavedModels and must reproduce the predictions ``train``
computed.
"""
import json
import os
import subprocess
import sys

import pytest
from conftest import job

pytestmark = pytest.mark.slow

VOCAB, DIM = 1000, 8
PROBE_IDS = [0, 1, 499, 500, 501, 998, 999]
PROBE_X = [0.5, -1.0, 2.0, 0.0, -0.25, 1.5, 3.0]

LOAD = """
import json, sys
import tensorflow as tf
keras_dir, module_dir, subclassed_dir = sys.argv[1:4]
ids = tf.constant({ids!r}, tf.int64)
x = tf.constant({x!r}, tf.float32)
assert not tf.distribute.has_strategy()
k = tf.saved_model.load(keras_dir)
serve = k.signatures["serving_default"]
(keras_pred,) = serve(id=ids, x=x).values()
m = tf.saved_model.load(module_dir)
(subclassed_pred,) = tf.saved_model.load(subclassed_dir).signatures["serving_default"](ids).values()
shapes = lambda d: [s for _, s in tf.train.list_variables(d + "/variables/variables")]
print(json.dumps({{
    "keras_pred": keras_pred.numpy().ravel().tolist(),
    "module_pred": m(ids, x).numpy().ravel().tolist(),
    "subclassed_pred": subclassed_pred.numpy().ravel().tolist(),
    "keras_shapes": shapes(keras_dir), "module_shapes": shapes(module_dir),
    "subclassed_shapes": shapes(subclassed_dir)}}))
"""


def split_over_both_ps(parts, rows):
    """``parts`` (name, shape, device) cover ``rows`` rows, one part on each of the two PS tasks."""
    assert len(parts) == 2, parts
    assert sum(p["shape"][0] for p in parts) == rows, parts
    assert sorted(p["device"].split("/device")[0] for p in parts) == \
        ["/job:ps/replica:0/task:0", "/job:ps/replica:0/task:1"], parts


def test_sharded_models_export_and_predict_without_the_strategy(pl_submit, tmp_path):
    out, module_dir, subclassed_dir = (tmp_path / "out.jsonl", tmp_path / "module_export",
                                       tmp_path / "subclassed_export")
    run = pl_submit(job("sharded_export.py"), "--ps", 2, "--workers", 1, "--arg", f"out={out}",
                    "--arg", f"module_dir={module_dir}", "--arg", f"subclassed_dir={subclassed_dir}",
                    timeout=240)
    assert run.returncode == 0, run.output[-3000:]
    with open(out) as f:
        (trained,) = [json.loads(line) for line in f if line.strip()]
    # The table really is split: two parts, one per parameter server, adding up to every row.
    split_over_both_ps([v for v in trained["keras"] if v["name"].startswith("tables/vectors")], VOCAB)
    split_over_both_ps([v for v in trained["keras"] if v["name"].startswith("tables/bias")], VOCAB)
    for parts in trained["module"]:
        split_over_both_ps(parts, VOCAB)
    split_over_both_ps(trained["subclassed"], VOCAB)
    assert trained["loss"][-1] < trained["loss"][0], trained["loss"]
    (app_dir,) = run.app_dirs()
    model_dir = os.path.join(app_dir, "model")
    check = subprocess.run([sys.executable, "-c", LOAD.format(ids=PROBE_IDS, x=PROBE_X),
                            model_dir, str(module_dir), str(subclassed_dir)], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert check.returncode == 0, check.stderr[-3000:]
    loaded = json.loads(check.stdout.strip().splitlines()[-1])
    for key in ("keras_pred", "module_pred", "subclassed_pred"):
        assert len(loaded[key]) == len(PROBE_IDS)
        assert max(abs(a - b) for a, b in zip(loaded[key], trained[key])) < 1e-5, (key, loaded, trained)
    # Each sharded table was saved as one variable of its full shape.
    for shapes in (loaded["keras_shapes"], loaded["module_shapes"], loaded["subclassed_shapes"]):
        assert [VOCAB, DIM] in shapes and [VOCAB, 1] in shapes, shapes
