"""Seconds from a SIGKILL to the first training step after recovery, PS mode, median of N.

    python bench/recovery.py [--runs 3]

Runs tests/jobs/recover_ctl.py (--ps 1 --workers 2, one step per progress record) and kills the
worker's or the PS's TF process once training is under way and a checkpoint exists.
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
        if "elearn.runtime.node" in cmd and f'"role": "{role}", "index": 0' in env:
            return pid
    return None


def one_run(role: str, tmp: str) -> float:
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
        while True:
            after = [r for r in records(progress) if "step" in r and r["time"] > killed_at]
            if after:
                return after[0]["time"] - killed_at
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"no step after the kill: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
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
    results = {}
    for role in TARGETS:
        results[role] = []
        for i in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                results[role].append(one_run(role, tmp))
            print(f"{role} kill, run {i + 1}: {results[role][-1]:.1f}s to the next step", flush=True)
    print(f"\n{'kill':<8} {'median s':>9} {'target s':>9} {'median/target':>14}")
    for role, target in TARGETS.items():
        med = statistics.median(results[role])
        print(f"{role:<8} {med:>9.1f} {target:>9.1f} {med / target:>14.2f}")


if __name__ == "__main__":
    main()
