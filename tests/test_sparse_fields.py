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
    assert warning.startswith(f"{named} reads or rewrites every row of a table"), warning
    assert "2,000 x 8, 0 MiB" in warning and "tf_keras.optimizers.Adagrad" in warning
    # Below the threshold (64 MiB by default) nothing is said.
    assert optimizers.dense_update_warning(model) is None


def test_under_a_mirrored_strategy_the_warning_also_names_tf_keras_adagrad_and_not_the_legacy_one():
    """tf_keras's current Adagrad reads its whole accumulator under MultiWorkerMirroredStrategy
    (bench/optimizers.py --strategy mwms); the legacy one updates rows only there too."""
    import tf_keras

    model = compiled(tf_keras, tf_keras.optimizers.Adagrad())
    warning = optimizers.dense_update_warning(model, threshold=2000 * 8 * 4, mirrored=True)
    assert warning.startswith("tf_keras.optimizers.Adagrad reads or rewrites every row"), warning
    assert "under this strategy: tf_keras.optimizers.legacy.Adagrad" in warning, warning
    legacy = compiled(tf_keras, tf_keras.optimizers.legacy.Adagrad())
    assert optimizers.dense_update_warning(legacy, threshold=2000 * 8 * 4, mirrored=True) is None


RESULT = "reads or rewrites every row of a table"


@pytest.mark.slow
def test_ps_mode_adam_on_a_big_table_is_named_once_and_the_model_still_learns(pl_submit, tmp_path):
    out = tmp_path / "out.jsonl"
    # 1.1M user rows x 16 floats: 67 MiB, above the 64 MiB threshold.
    run = pl_submit(job("sparse_fields.py"), "--ps", 1, "--workers", 1, "--arg", "rows=1100000",
                    "--arg", "optimizer=adam", "--arg", "epochs=3", "--arg", f"out={out}", timeout=600)
    assert run.returncode == 0, run.output[-3000:]
    assert run.stdout.count(RESULT) == 1, run.stdout[-3000:]
    assert "tf_keras.optimizers.Adam reads or rewrites" in run.stdout and "1,100,064 x 16, 67 MiB" in run.stdout
    seen = lines(out)[-1]
    assert seen["mode"] == "ps" and seen["accuracy"][-1] > 0.9, seen


ONE_STEP = "allreduce workers run 1 step per execution, not 8"


@pytest.mark.slow
@pytest.mark.parametrize("keras", ["keras", "tf_keras"])
def test_allreduce_mode_trains_string_and_tag_fields_with_a_row_wise_optimizer(pl_submit, tmp_path, keras):
    """Keras 3, and tf_keras with its legacy Adagrad and 8 steps per execution, which elearn runs
    one step per call on two workers, saying so (TensorFlow's all-gather of sparse gradients fails
    inside a multi-step call)."""
    out = tmp_path / "out.jsonl"
    run = pl_submit(job("sparse_fields.py"), "--ps", 0, "--workers", 2, "--arg", "epochs=4",
                    "--arg", f"keras={keras}", "--arg", "steps_per_execution=8", "--arg", f"out={out}", timeout=600)
    assert run.returncode == 0, run.output[-3000:]
    assert RESULT not in run.output and "trains faster in PS mode" not in run.output   # small tables
    if keras == "tf_keras":
        assert run.stdout.count(ONE_STEP) == 1, run.stdout[-3000:]
        assert "sparse gradients of field_embeddings" in run.stdout, run.stdout[-3000:]
    seen = [r for r in lines(out) if r["mode"] == "allreduce"]
    assert seen and seen[-1]["accuracy"][-1] > 0.9, seen
    assert seen[-1]["loss"][-1] < 0.6 * seen[-1]["loss"][0], seen


def test_allreduce_mode_says_a_keras_embedding_table_is_read_whole_and_names_the_ways_around():
    import tf_keras

    model = compiled(tf_keras, tf_keras.optimizers.Adagrad())
    notice = optimizers.mirrored_tables_warning(model, threshold=2000 * 8 * 4)
    assert "trains faster in PS mode (--ps N)" in notice and "(2,000 x 8, 0 MiB)" in notice, notice
    assert "elearn.FieldEmbeddings looks up only the rows" in notice, notice
    assert optimizers.mirrored_tables_warning(model) is None          # below 64 MiB: nothing said


def test_allreduce_mode_says_nothing_of_tables_that_field_embeddings_looks_up():
    import tf_keras

    import elearn

    inputs = {"user": tf_keras.Input((), dtype="int64", name="user")}
    vectors = elearn.FieldEmbeddings({"user": 2000}, 8, keras=tf_keras)(inputs)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(1)(tf_keras.layers.Flatten()(vectors)))
    model.compile(tf_keras.optimizers.legacy.Adagrad(), "mse")
    assert optimizers.mirrored_tables_warning(model, threshold=2000 * 8 * 4) is None
    # The same table in a Keras Embedding is named.
    assert "(2,000 x 8, 0 MiB)" in optimizers.mirrored_tables_warning(
        compiled(tf_keras, tf_keras.optimizers.legacy.Adagrad()), threshold=2000 * 8 * 4)
