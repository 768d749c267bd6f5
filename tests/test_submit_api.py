"""elearn.submit from Python, the way a notebook calls it: from a thread that is not the main one."""
import json
import os
import subprocess
import sys

from conftest import JOBS, ROOT, assert_no_orphans

SCRIPT = r"""
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


def test_submit_from_a_non_main_thread_reports_the_users_error(tmp_path):
    marker = tmp_path / "marker.jsonl"
    tag = os.urandom(8).hex()
    env = {**os.environ, "ELEARN_HOME": str(tmp_path), "ELEARN_TEST_TAG": tag,
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(jobs=JOBS, marker=str(marker))],
                          env=env, capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    result = json.loads(line[len("RESULT"):])
    assert result["status"] == "failed" and not result["ok"]
    assert "boom from train" in result["error"]
    assert "raises.py" in result["traceback"] and "ValueError" in result["traceback"]
    with open(marker) as f:
        assert len(f.readlines()) == 1  # shutdown ran exactly once
    with open(os.path.join(result["app_dir"], "summary.json")) as f:
        assert json.load(f)["status"] == "failed"
    assert_no_orphans(tag)
