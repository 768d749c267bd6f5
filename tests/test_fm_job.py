"""The MovieLens FM example end to end on pyspark's bundled sample ratings, in both modes:
real pl_submit, Spark, ZooKeeper and TF processes; training, export, Spark scoring, evaluation."""
import json
import os

import pyspark
import pytest
from conftest import ROOT

JOB = os.path.join(ROOT, "examples", "fm_movielens", "fm_job.py")
SAMPLE = os.path.join(os.path.dirname(pyspark.__file__), "data", "mllib", "als", "sample_movielens_ratings.txt")
# 1,501 ratings of 30 users; each user's latest 10% (floor, at least one) is validation.
TRAIN_ROWS, VALIDATION_ROWS = 1369, 132


def events(path):
    with open(path) as f:
        return {e["event"]: e for e in map(json.loads, f)}


# 3 ALS iterations instead of 10: the Spark jobs of each iteration, not the 1,369 ratings, cost
# the time, and the bound below only asks for a sane ALS.
def check_evaluation(got):
    assert got["n"] == VALIDATION_ROWS
    # Two epochs on 1,369 noisy ratings: the FM must at least be a sane rating model.
    assert 0 < got["elearn FM"] < 1.5 * got["global mean"], got
    assert 0 < got["Spark ALS"] < 2 * got["global mean"], got


@pytest.mark.timeout(1200)
def test_ps_mode_shards_embeddings_over_both_ps_and_scores_with_spark(pl_submit, tmp_path):
    out = tmp_path / "out.jsonl"
    # 1 KiB shards so that even the sample's 30 x 16 user table is split.
    run = pl_submit(JOB, "--ps", 2, "--workers", 2, "--arg", f"data={SAMPLE}", "--arg", "epochs=2",
                    "--arg", "batch_size=128", "--arg", "shard_kib=1", "--arg", "als_iter=3",
                    "--arg", f"out={out}", "--register-timeout", 600, timeout=900)
    assert run.returncode == 0, run.output[-4000:]
    got = events(out)
    assert got["train"]["rows"] == TRAIN_ROWS and got["train"]["mode"] == "ps"
    # The user table is listed as its parts, one on each PS, together 30 rows.
    parts = [s for v in got["train"]["placement"] if v["name"].startswith("user_idx_embedding")
             for s in v["shards"]]
    assert {s["device"] for s in parts} == {"/job:ps/replica:0/task:0/device:CPU:0",
                                            "/job:ps/replica:0/task:1/device:CPU:0"}
    assert len(parts) == 2 and sum(s["shape"][0] for s in parts) == 30
    check_evaluation(got["evaluation"])
    assert "elearn FM" in run.stdout and "validation RMSE on 132 ratings" in run.stdout


@pytest.mark.timeout(1200)
def test_allreduce_mode_trains_the_same_job(pl_submit, tmp_path):
    out = tmp_path / "out.jsonl"
    run = pl_submit(JOB, "--ps", 0, "--workers", 2, "--arg", f"data={SAMPLE}", "--arg", "epochs=2",
                    "--arg", "batch_size=128", "--arg", "als_iter=3", "--arg", f"out={out}",
                    "--register-timeout", 600, timeout=900)
    assert run.returncode == 0, run.output[-4000:]
    got = events(out)
    assert got["train"]["rows"] == TRAIN_ROWS and got["train"]["mode"] == "allreduce"
    check_evaluation(got["evaluation"])
