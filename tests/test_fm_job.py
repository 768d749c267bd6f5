"""The MovieLens FM example end to end on pyspark's bundled sample ratings in allreduce mode: real
pl_submit, Spark, ZooKeeper and TF processes; training, export, Spark scoring, evaluation. PS mode,
with its embeddings sharded over two parameter servers, runs on the simulated cluster
(test_multihost.py)."""
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
def test_allreduce_mode_trains_the_same_job(pl_submit, tmp_path):
    out = tmp_path / "out.jsonl"
    run = pl_submit(JOB, "--ps", 0, "--workers", 2, "--arg", f"data={SAMPLE}", "--arg", "epochs=2",
                    "--arg", "batch_size=128", "--arg", "als_iter=3", "--arg", f"out={out}",
                    "--register-timeout", 600, timeout=900)
    assert run.returncode == 0, run.output[-4000:]
    got = events(out)
    assert got["train"]["rows"] == TRAIN_ROWS and got["train"]["mode"] == "allreduce"
    check_evaluation(got["evaluation"])
