"""elearn.submit inside a real Jupyter kernel (ipykernel through jupyter_client), as a notebook
runs it: the cell's output shows elearn's lines and train's own progress, and nothing is left."""
import os
import uuid

from conftest import JOBS, ROOT, assert_no_orphans, lines

CELL = """
import sys
sys.path.insert(0, {jobs!r})
import elearn
from linear_fit import LinearFit
result = elearn.submit(LinearFit, ps=1, workers=1,
                       args={{"rows": 2000, "epochs": 2, "out": {out!r}, "marker": {marker!r}}})
print("STATUS", result.status, result.error)
"""


def test_submit_in_a_jupyter_kernel_shows_progress_in_the_cell(tmp_path):
    from jupyter_client.manager import start_new_kernel

    tag = uuid.uuid4().hex
    out, marker = tmp_path / "out.jsonl", tmp_path / "marker.jsonl"
    env = {**os.environ, "ELEARN_HOME": str(tmp_path), "ELEARN_TEST_TAG": tag,
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    manager, client = start_new_kernel(kernel_name="python3", env=env, cwd=str(tmp_path))
    shown = []

    def collect(msg):
        if msg["msg_type"] == "stream":
            shown.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            shown.append("\n".join(msg["content"]["traceback"]))

    try:
        reply = client.execute_interactive(CELL.format(jobs=JOBS, out=str(out), marker=str(marker)),
                                           timeout=600, output_hook=collect)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=False)
    text = "".join(shown)
    assert reply["content"]["status"] == "ok", text[-3000:]
    assert "STATUS succeeded None" in text, text[-3000:]
    # elearn's own lines, and train's progress lines from the coordinator process, in the cell.
    for expected in ("nodes registered 2/2", "cluster up: 1 ps, 1 workers", "] step ", ": loss=",
                     "summary: succeeded"):
        assert expected in text, (expected, text[-3000:])
    assert len(lines(marker)) == 1 and len(lines(out)) == 1
    assert_no_orphans(tag)
