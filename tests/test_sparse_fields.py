"""Sparse models end to end: a string field and an array<string> field fed from Spark into
elearn.FieldEmbeddings, trained in both modes; and the warning for an optimizer that rewrites whole
embedding tables, which appears for Adam on a big table and not for the row-wise optimizers."""
import pytest
from conftest import job, lines

import elearn.train.optimizers as optimizers

tf = pytest.importorskip("tensorflow")


def compiled(keras, optimizer, rows=2000):
    model = keras.Sequential([keras.Input((1,), dtype="int64"), keras.layers.Embedding(rows, 8, name="ids"),
                              keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile(optimizer, "mse")
    return model


def cases():
    import keras
    import tf_keras

    tk, legacy = tf_keras.optimizers, tf_keras.optimizers.legacy
    return [
        pytest.param(tf_keras, lambda: tk.Adam(), "tf_keras.optimizers.Adam", id="tf_keras-Adam"),
        pytest.param(tf_keras, lambda: tk.SGD(0.1), "tf_keras.optimizers.SGD", id="tf_keras-SGD"),
        pytest.param(tf_keras, lambda: tk.Ftrl(), "tf_keras.optimizers.Ftrl", id="tf_keras-Ftrl"),
        pytest.param(tf_keras, lambda: tk.Adagrad(), None, id="tf_keras-Adagrad"),
        pytest.param(tf_keras, lambda: legacy.SGD(0.1, momentum=0.9), None, id="legacy-SGD-momentum"),
        pytest.param(tf_keras, lambda: legacy.Ftrl(), None, id="legacy-Ftrl"),
        pytest.param(tf_keras, lambda: legacy.Adam(), "tf_keras.optimizers.legacy.Adam", id="legacy-Adam"),
        pytest.param(keras, lambda: keras.optimizers.SGD(0.1), None, id="keras3-SGD"),
        pytest.param(keras, lambda: keras.optimizers.SGD(0.1, momentum=0.9), "keras.optimizers.SGD",
                     id="keras3-SGD-momentum"),
        pytest.param(keras, lambda: keras.optimizers.Adagrad(), "keras.optimizers.Adagrad", id="keras3-Adagrad"),
    ]


@pytest.mark.parametrize("keras, make, named", cases())
def test_the_warning_names_whole_table_optimizers_and_spares_row_wise_ones(keras, make, named):
    model = compiled(keras, make())
    warning = optimizers.dense_update_warning(model, threshold=2000 * 8 * 4)
    if named is None:
        assert warning is None
        return
    assert warning.startswith(f"{named} rewrites every row of a table"), warning
    assert "2,000 x 8, 0 MiB" in warning and "tf_keras.optimizers.Adagrad" in warning
    # Below the threshold (64 MiB by default) nothing is said.
    assert optimizers.dense_update_warning(model) is None


RESULT = "rewrites every row of a table"


@pytest.mark.slow
def test_ps_mode_adam_on_a_big_table_is_named_once_and_the_model_still_learns(pl_submit, tmp_path):
    out = tmp_path / "out.jsonl"
    # 1.1M user rows x 16 floats: 67 MiB, above the 64 MiB threshold.
    run = pl_submit(job("sparse_fields.py"), "--ps", 1, "--workers", 1, "--arg", "rows=1100000",
                    "--arg", "optimizer=adam", "--arg", "epochs=3", "--arg", f"out={out}", timeout=600)
    assert run.returncode == 0, run.output[-3000:]
    assert run.stdout.count(RESULT) == 1, run.stdout[-3000:]
    assert "tf_keras.optimizers.Adam rewrites" in run.stdout and "1,100,064 x 16, 67 MiB" in run.stdout
    seen = lines(out)[-1]
    assert seen["mode"] == "ps" and seen["accuracy"][-1] > 0.9, seen


@pytest.mark.slow
def test_allreduce_mode_trains_string_and_tag_fields_with_a_row_wise_optimizer(pl_submit, tmp_path):
    out = tmp_path / "out.jsonl"
    run = pl_submit(job("sparse_fields.py"), "--ps", 0, "--workers", 2, "--arg", "epochs=4",
                    "--arg", f"out={out}", timeout=600)
    assert run.returncode == 0, run.output[-3000:]
    assert RESULT not in run.output and "trains faster in PS mode" not in run.output   # small tables
    seen = [r for r in lines(out) if r["mode"] == "allreduce"]
    assert seen and seen[-1]["accuracy"][-1] > 0.9, seen
    assert seen[-1]["loss"][-1] < 0.6 * seen[-1]["loss"][0], seen


def test_allreduce_mode_says_a_model_with_big_tables_trains_faster_in_ps_mode():
    import tf_keras

    model = compiled(tf_keras, tf_keras.optimizers.Adagrad())
    notice = optimizers.mirrored_tables_warning(model, threshold=2000 * 8 * 4)
    assert "trains faster in PS mode (--ps N)" in notice and "(2,000 x 8, 0 MiB)" in notice, notice
    assert optimizers.mirrored_tables_warning(model) is None          # below 64 MiB: nothing said
