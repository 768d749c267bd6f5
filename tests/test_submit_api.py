"""elearn.submit from Python, the way a notebook calls it: a job class or instance, no CLI."""
import json
import os
import subprocess
import sys

import pytest
from conftest import JOBS, ROOT, assert_no_orphans, lines

TRUE_W, TRUE_B = [2.0, -3.0, 0.5, 1.5], 1.0

FAILING = r"""
import json, sys, threading
sys.path.insert(0, {jobs!r})
import elearn
from raises import Raises

out = {{}}
def run():
    result = elearn.submit(Raises, ps=1, workers=1, args={{"marker": {marker!r}}}, quiet=True)
    out.update(status=result.status, error=result.error, traceback=result.traceback,
               app_dir=result.app_dir, ok=result.ok)
t = threading.Thread(target=run)
t.start()
t.join(600)
print("RESULT" + json.dumps(out))
"""

# A custom training loop (coordinator.schedule) on a job instance, its own args merged with submit's.
CUSTOM_LOOP = r"""
import dataclasses, json, sys
sys.path.insert(0, {jobs!r})
import elearn
from recover_ctl import RecoverLoop

job = RecoverLoop({{"out": {out!r}, "marker": {marker!r}}})
result = elearn.submit(job, ps=1, workers=2, args={{"pause": 0, "steps": 400}})
print("RESULT" + json.dumps(dataclasses.asdict(result)))
"""


def submit_in_python(tmp_path, script: str) -> dict:
    tag = os.urandom(8).hex()
    env = {**os.environ, "ELEARN_HOME": str(tmp_path), "ELEARN_TEST_TAG": tag,
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=600, cwd=str(tmp_path))
    found = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert found, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_no_orphans(tag)
    return json.loads(found[0][len("RESULT"):])


@pytest.mark.slow
def test_submit_from_a_non_main_thread_reports_the_users_error(tmp_path):
    marker = tmp_path / "marker.jsonl"
    result = submit_in_python(tmp_path, FAILING.format(jobs=JOBS, marker=str(marker)))
    assert result["status"] == "failed" and not result["ok"]
    assert "boom from train" in result["error"]
    assert "raises.py" in result["traceback"] and "ValueError" in result["traceback"]
    assert len(lines(marker)) == 1  # shutdown ran exactly once
    with open(os.path.join(result["app_dir"], "summary.json")) as f:
        assert json.load(f)["status"] == "failed"


@pytest.mark.slow
def test_submit_runs_a_custom_loop_job_instance_to_the_true_weights(tmp_path):
    out, marker = tmp_path / "out.jsonl", tmp_path / "marker.jsonl"
    result = submit_in_python(tmp_path, CUSTOM_LOOP.format(jobs=JOBS, out=str(out), marker=str(marker)))
    assert result["status"] == "succeeded" and result["mode"] == "ps" and not result["error"]
    (learned,) = lines(out)
    for got, want in zip(learned["w"], TRUE_W):
        assert abs(got - want) < 0.05, learned
    assert abs(learned["b"] - TRUE_B) < 0.05, learned
    assert len(lines(marker)) == 1
    assert result["rows"] == {"train": 20000}
    assert os.path.isfile(os.path.join(result["model_dir"], "saved_model.pb"))
    assert os.listdir(result["checkpoint_dir"])
    marks = result["timings"]  # seconds since submit, in the order the phases ended
    assert {"spark", "pre_train", "register", "feed", "train", "teardown"} <= set(marks), marks
    assert list(marks.values()) == sorted(marks.values()), marks
    # The final step reported, and the summary.json that holds it with the rest of the run.
    with open(result["summary_path"]) as f:
        summary = json.load(f)
    assert result["step"] == summary["steps"] == 400 and result["metrics"] == summary["metrics"]
