"""Seconds from a SIGKILL to the first training step after recovery, PS mode, median of N.

    python bench/recovery.py [--runs 3]

Runs tests/jobs/recover_ctl.py (--ps 1 --workers 2, one step per progress record) and kills the
worker's or the PS's TF process once training is under way and a checkpoint exists. For a worker
kill training does not stop (the other worker takes the steps), so the time until the killed
worker's TF server is back in the cluster (its znode says restarted and running) is shown too.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from conftest import tagged_pids  # noqa: E402

TARGETS = {"worker": 15.0, "ps": 30.0}


def records(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def tf_node(tag, role):
    for pid in tagged_pids(tag):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().decode(errors="replace")
        except OSError:
            continue
        if "elearn.runtime.tf_server" in cmd and f'"role": "{role}", "index": 0' in env:
            return pid
    return None


def worker_back(tmp: str, restarts: int = 1) -> bool:
    """Whether worker 0's daemon has restarted its TF process and it serves again."""
    from elearn.cluster.zookeeper import connect

    entries = [os.path.join(tmp, "running", n) for n in os.listdir(os.path.join(tmp, "running"))]
    with open(entries[0]) as f:
        entry = json.load(f)
    client = connect(entry["zk"])
    try:
        node = json.loads(client.get(f"/elearn/{entry['app_id']}/worker/0")[0])
    except Exception:
        return False
    finally:
        client.stop()
    return node.get("restarts", 0) >= restarts and node.get("state") == "running"


def one_run(role: str, tmp: str) -> tuple[float, float | None]:
    progress = os.path.join(tmp, "progress.jsonl")
    tag = uuid.uuid4().hex
    env = {**os.environ, "ELEARN_HOME": tmp, "ELEARN_TEST_TAG": tag,
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "plsubmit.cli", os.path.join(ROOT, "tests", "jobs", "recover_ctl.py"),
         "--ps", "1", "--workers", "2", "--quiet", "--arg", f"progress={progress}",
         "--arg", "round=1", "--arg", "pause=0.02", "--arg", "every=10", "--arg", "steps=100000"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not any(r.get("saved") for r in records(progress)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"no checkpoint: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        pid = tf_node(tag, role)
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        step_after = back_after = None
        while step_after is None or (role == "worker" and back_after is None):
            after = [r for r in records(progress) if "step" in r and r["time"] > killed_at]
            if after and step_after is None:
                step_after = after[0]["time"] - killed_at
            if role == "worker" and back_after is None and worker_back(tmp):
                back_after = time.time() - killed_at
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"no step after the kill: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        return step_after, back_after
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for pid in tagged_pids(tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    results, back = {}, []
    for role in TARGETS:
        results[role] = []
        for i in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                step, again = one_run(role, tmp)
            results[role].append(step)
            if again is not None:
                back.append(again)
            print(f"{role} kill, run {i + 1}: {step:.1f}s to the next step"
                  + (f", {again:.1f}s until its TF server was back" if again is not None else ""), flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(f"\n{'kill':<8} {'median s':>9} {'target s':>9} {'median/target':>14}")
    for role, target in TARGETS.items():
        med = statistics.median(results[role])
        print(f"{role:<8} {med:>9.1f} {target:>9.1f} {med / target:>14.2f}")
    if back:
        print(f"worker TF server back in the cluster: median {statistics.median(back):.1f}s "
              f"({', '.join(f'{b:.1f}' for b in back)})")


if __name__ == "__main__":
    main()
