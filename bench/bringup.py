"""Bring-up and teardown of a local PS cluster (--ps 1 --workers 2), median of N runs.

    python bench/bringup.py [--runs 3]

Times: submit -> first training step finished; train returned -> pl_submit exited.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = {"first step": 20.0, "teardown": 5.0}


def one_run(tmp: str) -> dict:
    out = os.path.join(tmp, "times.json")
    env = {**os.environ, "ELEARN_HOME": tmp}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "plsubmit.cli", os.path.join(HERE, "jobs", "first_step.py"),
                           "--ps", "1", "--workers", "2", "--quiet", "--arg", f"out={out}"],
                          env=env, capture_output=True, text=True, timeout=600)
    t_exit = time.time()
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    with open(out) as f:
        times = json.load(f)
    return {"first step": times["first_step"] - t0, "teardown": t_exit - times["train_end"]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one_run(tmp))
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.1f}s" for k, v in runs[-1].items()), flush=True)
    print(f"\n{'measure':<12} {'median s':>9} {'target s':>9} {'median/target':>14}")
    for key, target in TARGETS.items():
        med = statistics.median(r[key] for r in runs)
        print(f"{key:<12} {med:>9.1f} {target:>9.1f} {med / target:>14.2f}")


if __name__ == "__main__":
    main()
