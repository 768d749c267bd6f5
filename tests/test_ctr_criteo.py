"""The Criteo CTR example (examples/ctr_criteo) end to end on the simulated cluster of
tests/simcluster.py (3 worker hosts that share no disk but one mounted directory, the data's): Spark
reads the generated TSV day files and builds the features, the DeepFM trains with its hashed
embedding tables sharded over two parameter servers (PS mode) or mirrored on two workers (allreduce
mode), and the exported model scores the validation day's rows on the executors.

The data are the example's ``tiny`` scale (20,000 rows, the last 2,000 held out) with labels drawn
from a planted teacher, so the best possible AUC is known (0.8254). Each run must get well above
chance towards it: validation AUC > 0.5 + 0.6 x (teacher AUC - 0.5) = 0.6953. Measured in two runs
each: 0.735 and 0.745 in PS mode, 0.743 and 0.747 in allreduce mode; untrained (``--arg lr=0``)
the PS run scored 0.543 and failed.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import uuid

import pytest
from cluster_runs import submit_on
from conftest import ROOT
from simcluster import cluster_fixture

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(1500)]

EXAMPLE = os.path.join(ROOT, "examples", "ctr_criteo")
JOB = os.path.join(EXAMPLE, "ctr_job.py")
# 2 epochs of 18,000 rows in updates of 256 rows (128 per worker: allreduce averages two, a PS
# step takes 2 x 128), small tables (21k ids per table: buckets_scale 0.001; 8-wide embeddings)
# and a frequency threshold the tiny data can meet.
TRAINING = ["--arg", "scale=tiny", "--arg", "epochs=2", "--arg", "batch_size=128", "--arg", "lr=0.1",
            "--arg", "dim=8", "--arg", "buckets_scale=0.001", "--arg", "min_count=5"]
SHOWN = 5            # raw rows scored at the end (the job's default)


cluster = cluster_fixture(hosts=3, shared=True, cores=2, memory="3g", env={"ELEARN_TEST_TAG": uuid.uuid4().hex})


@pytest.fixture(autouse=True)
def quiet(cluster):
    """Nothing of a test's application outlives it, on any host."""
    yield
    cluster.wait_quiet(timeout=90)


@pytest.fixture(scope="module")
def criteo_tiny(cluster):
    """The tiny data set in the directory every host mounts: ``(path, teacher.json's contents)``.
    The teacher's numbers are on the held-out last day, which is left as generated."""
    # Loaded by its path under a name of its own: the MovieLens example has a generate.py too.
    spec = importlib.util.spec_from_file_location("ctr_criteo_generate", os.path.join(EXAMPLE, "generate.py"))
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    path = os.path.join(cluster.shared_dir, "criteo-tiny")
    teacher = generate.generate(path, "tiny", seed=7)
    # The first day as real Criteo files are, 40 columns (no tags): the job reads both kinds.
    day_0 = os.path.join(path, "day_0.tsv")
    with open(day_0) as f:
        lines = [line.rsplit("\t", 1)[0] + "\n" for line in f]
    with open(day_0, "w") as f:
        f.writelines(lines)
    return path, teacher


def run_example(cluster, tmp_path, data, app, nodes):
    out = tmp_path / "ctr.jsonl"
    run = submit_on(cluster.edge, [JOB, *nodes, "--app-name", app, "--arg", f"data={data}", *TRAINING,
                                   "--arg", f"out={out}", "--master", cluster.master_url,
                                   "--register-timeout", 600],
                    str(tmp_path / "home"), timeout=1200)
    assert run.returncode == 0, run.output[-4000:]
    with open(out) as f:
        events = {e["event"]: e for e in map(json.loads, f)}
    with open(os.path.join(run.app_dir(app), "summary.json")) as f:
        summary = json.load(f)
    return run, events, summary


def check_trained(events, teacher):
    """Validation AUC towards the teacher's, log loss below a constant guess, raw rows scored."""
    ev = events["evaluation"]
    assert ev["n"] == teacher["validation_rows"] == 2000, ev
    assert ev["teacher_auc"] == pytest.approx(teacher["teacher_auc"]), ev    # the job read teacher.json
    floor = 0.5 + 0.6 * (teacher["teacher_auc"] - 0.5)
    assert ev["auc"] > floor, f"validation AUC {ev['auc']:.4f} <= {floor:.4f} (teacher {teacher['teacher_auc']:.4f})"
    assert ev["logloss"] < ev["constant_logloss"], ev
    rows = events["scored"]["rows"]
    assert len(rows) == SHOWN and all(0.0 < r["ctr"] < 1.0 for r in rows), rows
    # The model took the strings as they are in the file (8 hex digits) or the job's tokens.
    assert all(re.fullmatch(r"[0-9a-f]{8}|__rare__|__missing__", r["C3"]) for r in rows), rows


def test_ps_mode_shards_the_tables_over_two_parameter_servers_and_nears_the_teacher(cluster, tmp_path, criteo_tiny):
    data, teacher = criteo_tiny
    run, events, summary = run_example(cluster, tmp_path, data, "mh-ctr-ps", ["--ps", 2, "--workers", 2])
    check_trained(events, teacher)
    assert summary["rows"]["train"]["total"] == 18_000, summary["rows"]
    # The embedding table (all 27 fields' rows, 8 wide), as train printed its variables: in parts
    # on both parameter servers, which together hold every row.
    ids = int(re.search(r"DeepFM: 27 hashed fields, ([\d,]+) ids per table", run.stdout).group(1).replace(",", ""))
    table = [line for line in run.stdout.splitlines() if re.match(r"\s+\S+\s+\[\d+, 8\]\s", line)]
    parts = [m for line in table for m in re.findall(r"(\d+) rows on /job:ps/replica:0/task:(\d)/", line)]
    assert {task for _, task in parts} == {"0", "1"}, "\n".join(table) or run.stdout[-4000:]
    assert sum(int(rows) for rows, _ in parts) == ids == 21_252, table
    print(f"PS mode: validation AUC {events['evaluation']['auc']:.4f} (teacher {teacher['teacher_auc']:.4f}), "
          f"log loss {events['evaluation']['logloss']:.4f} (teacher {teacher['teacher_logloss']:.4f})")


def test_allreduce_mode_trains_the_same_job_and_nears_the_teacher(cluster, tmp_path, criteo_tiny):
    data, teacher = criteo_tiny
    _, events, summary = run_example(cluster, tmp_path, data, "mh-ctr-ar", ["--ps", 0, "--workers", 2])
    check_trained(events, teacher)
    assert summary["rows"]["train"]["total"] == 18_000, summary["rows"]
    print(f"allreduce mode: validation AUC {events['evaluation']['auc']:.4f} (teacher {teacher['teacher_auc']:.4f}), "
          f"log loss {events['evaluation']['logloss']:.4f} (teacher {teacher['teacher_logloss']:.4f})")
