"""A checkpoint written with 2 parameter servers resumes with 3 and with 1: the embedding table and
its optimizer slots (Adagrad's accumulators) come back identical, so a user can grow or shrink the
PS tier between runs of the same application."""
import numpy as np
import pytest
from conftest import job

pytestmark = pytest.mark.slow


def values(path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_a_two_ps_checkpoint_resumes_with_three_and_one_ps_slots_included(pl_submit, tmp_path):
    ckpt = tmp_path / "ckpt"
    common = ["--app-name", "reshard", "--checkpoint-dir", str(ckpt), "--workers", 1, "--arg", "epochs=2"]
    first = pl_submit(job("reshard.py"), "--ps", 2, "--arg", f"out={tmp_path / 'ps2.npz'}", *common)
    assert first.returncode == 0, first.output[-3000:]
    written = values(tmp_path / "ps2.npz")
    assert int(written.pop("shards")) == 2
    slots = [k for k in written if k.startswith("optimizer/") and "accumulator" in k]
    assert slots, sorted(written)
    for ps in (3, 1):
        out = tmp_path / f"ps{ps}.npz"
        run = pl_submit(job("reshard.py"), "--ps", ps, "--arg", f"out={out}", *common)
        assert run.returncode == 0, run.output[-3000:]
        assert "fit resumes at epoch 3" in run.stdout
        read = values(out)
        assert int(read.pop("shards")) == ps
        # Trained values, not initial ones: the accumulators started at 0.1 everywhere.
        assert all(not np.allclose(written[k], 0.1) for k in slots)
        for name in written:
            np.testing.assert_array_equal(read[name], written[name], err_msg=f"{name} after 2 -> {ps} PS")
