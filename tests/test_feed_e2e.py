"""The feed in a real PS-mode run: pl_submit, real Spark, ZooKeeper and TF server processes."""
import os
from collections import Counter

import pytest
from conftest import job, lines

pytestmark = pytest.mark.slow


def test_ps_workers_read_each_row_once_per_epoch_fit_validates_and_failed_run_removes_spools(
        pl_submit, tmp_path):
    out = tmp_path / "out.jsonl"
    run = pl_submit(job("feed_ids.py"), "--ps", 1, "--workers", 2, "--arg", f"out={out}",
                    "--arg", "fail=1", timeout=420)
    records = lines(out)
    events = {r["event"] for r in records}
    assert {"spools", "epoch", "fit"} <= events, run.output[-4000:]
    # The run failed on purpose after training, and said why.
    assert run.returncode != 0 and "failing on purpose after training" in run.output

    (spools,) = [r for r in records if r["event"] == "spools"]
    assert spools["exist"] and spools["total"] == 3000 and spools["validation_rows"] == 600
    # One skewed input partition still splits evenly over the two workers.
    assert sorted(spools["rows"]) == [1500, 1500]
    assert spools["steps"] == 2 * -(-1500 // 64)

    epochs = [r for r in records if r["event"] == "epoch"]
    assert len(epochs) == 2
    for e in epochs:
        per_worker = {int(w): ids for w, ids in e["ids"].items()}
        assert sorted(per_worker) == [0, 1]
        for w, ids in per_worker.items():
            assert len(ids) == spools["rows"][w] and len(set(ids)) == len(ids)
        # Every row reached exactly one worker and was read exactly once in the epoch.
        assert Counter(per_worker[0] + per_worker[1]) == Counter(range(3000))
    # Same membership per worker in both epochs; shuffling changed the order.
    for w in ("0", "1"):
        assert sorted(epochs[0]["ids"][w]) == sorted(epochs[1]["ids"][w])
        assert epochs[0]["ids"][w] != epochs[1]["ids"][w]

    (fit,) = [r for r in records if r["event"] == "fit"]
    assert fit["val_loss"] and len(fit["val_loss"]) == 4 and fit["val_loss"][-1] < 0.05, fit
    assert abs(fit["w"] - 3.0) < 0.2 and abs(fit["b"] - 1.0) < 0.2, fit

    # The spools are gone although train failed.
    assert spools["dirs"] and not any(os.path.exists(d) for d in spools["dirs"])
    for app_dir in run.app_dirs():
        assert not os.path.exists(os.path.join(app_dir, "nodes", "spool"))


def test_nulls_fail_before_training_without_restarts_and_job_level_fill_replaces_them(pl_submit, tmp_path):
    out = tmp_path / "out.jsonl"
    failed = pl_submit(job("nulls.py"), "--workers", 1, "--arg", f"out={out}", timeout=300)
    assert failed.returncode == 1
    assert "dataset 'train' has nulls in x (10 nulls)" in failed.stderr, failed.output[-3000:]
    assert "not retried" in failed.stderr and "restart 1/" not in failed.stdout
    assert "  restarts: 0" in failed.stdout
    assert lines(out) == []

    filled = pl_submit(job("nulls.py"), "--workers", 1, "--fill", "x=-1", "--arg", f"out={out}",
                       timeout=300)
    assert filled.returncode == 0, filled.output[-3000:]
    (seen,) = lines(out)
    assert seen["x"] == sorted([-1.0] * 10 + [float(i) for i in range(100) if i % 10])
