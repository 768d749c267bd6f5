"""pl_submit list/status/kill and --tensorboard against a real running application."""
import os
import subprocess
import time
import urllib.request

from conftest import PL_SUBMIT, ROOT, assert_no_orphans, finish, job, lines, start_pl_submit


def control(tmp_path, *args):
    env = {**os.environ, "ELEARN_HOME": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(PL_SUBMIT + list(args), env=env, capture_output=True, text=True, timeout=180)


def test_status_list_kill_and_tensorboard(tmp_path):
    started, marker = tmp_path / "started.jsonl", tmp_path / "marker.jsonl"
    run = start_pl_submit([job("waits.py"), "--ps", 1, "--workers", 1, "--app-name", "ops-test",
                           "--tensorboard", "--arg", f"started={started}",
                           "--arg", f"marker={marker}"], tmp_path)
    deadline = time.monotonic() + 300
    while not lines(started):
        assert run.proc.poll() is None, run.proc.communicate()
        assert time.monotonic() < deadline, "train never started"
        time.sleep(0.2)

    listed = control(tmp_path, "list")
    assert "ops-test" in listed.stdout, listed.stderr

    status = control(tmp_path, "status", "ops-test")
    assert status.returncode == 0, status.stderr
    assert "application ops-test: running" in status.stdout
    for node in ("ps:0", "worker:0"):
        row = next(line for line in status.stdout.splitlines() if line.startswith(node))
        assert "running" in row and "127.0.0.1:" in row and "s ago" in row

    # TensorBoard answers while the application runs (the printed URL is checked at the end,
    # when the console output can be read; here its address comes from the running process).
    url = _tensorboard_url(run)
    assert url, "no TensorBoard process"
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.status == 200

    killed = control(tmp_path, "kill", "ops-test")
    assert killed.returncode == 0, killed.stderr
    assert "ops-test stopped" in killed.stdout
    finish(run, timeout=120)
    assert run.returncode != 0
    assert "killed on request" in run.stderr
    assert f"TensorBoard: {url}" in run.stdout
    assert len(lines(marker)) == 1
    assert_no_orphans(run.tag)
    assert not (tmp_path / "running" / "ops-test.json").exists()


def _tensorboard_url(run):
    for pid in _children_cmdlines(run):
        if "tensorboard.main" in pid:
            parts = pid.split()
            host = parts[parts.index("--host") + 1]
            port = parts[parts.index("--port") + 1]
            return f"http://{host}:{port}/"
    return None


def _children_cmdlines(run):
    from conftest import tagged_pids

    out = []
    for pid in tagged_pids(run.tag):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                out.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return out
