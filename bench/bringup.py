"""Bring-up and teardown of a local PS cluster (--ps 1 --workers 2), median of N runs.

    python bench/bringup.py [--runs 3]

Times: submit -> first training step finished; train returned -> pl_submit exited. One cold run
first, with an empty JVM class-data cache (what the very first submit on a machine pays, including
writing the archive at exit), then N warm runs (every later submit), each in a fresh ELEARN_HOME.
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


def one_run(tmp: str, jvm_cache: str) -> dict:
    out = os.path.join(tmp, "times.json")
    env = {**os.environ, "ELEARN_HOME": tmp, "ELEARN_JVM_CACHE": jvm_cache}
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
    with tempfile.TemporaryDirectory() as jvm_cache:
        with tempfile.TemporaryDirectory() as tmp:
            cold = one_run(tmp, jvm_cache)
        print("cold run: " + ", ".join(f"{k} {v:.1f}s" for k, v in cold.items()), flush=True)
        runs = []
        for i in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                runs.append(one_run(tmp, jvm_cache))
            print(f"warm run {i + 1}: " + ", ".join(f"{k} {v:.1f}s" for k, v in runs[-1].items()),
                  flush=True)
    print(f"\n{'measure':<12} {'cold s':>7} {'warm median s':>14} {'target s':>9} {'warm/target':>12}")
    for key, target in TARGETS.items():
        med = statistics.median(r[key] for r in runs)
        print(f"{key:<12} {cold[key]:>7.1f} {med:>14.1f} {target:>9.1f} {med / target:>12.2f}")

if __name__ == "__main__":
    main()
