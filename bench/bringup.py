"""Bring-up and teardown of a PS cluster (--ps 1 --workers 2), median of N runs, side by side.

    python bench/bringup.py [--runs 3] [--hosts 3] [--connect] [--shapes]

Times: submit -> first training step finished; train returned -> pl_submit exited. One cold run
first on local Spark, with an empty JVM class-data cache (what the very first submit on a machine
pays, including writing the archive at exit), then N warm rounds of every variant asked for, run
interleaved so that the machine's load falls on all of them alike, each in a fresh ELEARN_HOME:

- ``local``: the default ``local[N]`` Spark, embedded ZooKeeper (always run: the baseline);
- ``--hosts N``: the same job submitted from the edge host of a simulated N-host standalone cluster
  (tests/simcluster.py; root), no shared disk;
- ``--connect``: the same job over Spark Connect (``--remote``) to a server on ``local[4]``
  started beforehand (tests/connect_server.py), as a notebook attached to a running server would;
- ``--shapes``: on the simulated cluster, with ``--ps-cores 1 --ps-memory 1g`` (the PS on an
  executor of its own shape) next to the same cluster without shapes.

The clusters and the Connect server start before the first round and are not timed.
"""
import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
JOB = os.path.join(HERE, "jobs", "first_step.py")
TARGETS = {"first step": 20.0, "teardown": 5.0}
SHAPES = ["--ps-cores", "1", "--ps-memory", "1g"]


def _times(out: str, t0: float, t_exit: float, output: str) -> dict:
    try:
        with open(out) as f:
            times = json.load(f)
    except OSError:
        raise SystemExit(f"the run left no times in {out}:\n{output[-3000:]}")
    return {"first step": times["first_step"] - t0, "teardown": t_exit - times["train_end"]}


def run_here(jvm_cache: str, extra: list) -> dict:
    """One pl_submit on this host (local Spark, or --remote)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "times.json")
        env = {**os.environ, "ELEARN_HOME": tmp, "ELEARN_JVM_CACHE": jvm_cache}
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "plsubmit.cli", JOB, "--ps", "1", "--workers", "2",
                               "--quiet", "--arg", f"out={out}", *extra],
                              env=env, capture_output=True, text=True, timeout=900)
        t_exit = time.time()
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        return _times(out, t0, t_exit, proc.stderr)


def run_on_edge(cluster, jvm_cache: str, extra: list) -> dict:
    """One pl_submit from the simulated cluster's edge host (which sees this machine's /tmp)."""
    from cluster_runs import submit_on

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "times.json")
        t0 = time.time()
        run = submit_on(cluster.edge, [JOB, "--ps", 1, "--workers", 2, "--quiet", "--master",
                                       cluster.master_url, "--arg", f"out={out}", *extra],
                        os.path.join(tmp, "home"), env={"ELEARN_JVM_CACHE": jvm_cache})
        t_exit = time.time()
        if run.returncode != 0:
            raise SystemExit(run.output[-3000:])
        cluster.wait_quiet(timeout=120)  # its executors gone before the next round starts
        return _times(out, t0, t_exit, run.output)


def _shown(times: dict) -> str:
    return ", ".join(f"{k} {v:.1f}s" for k, v in times.items())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hosts", type=int, default=0, help="also on a simulated cluster of N hosts")
    parser.add_argument("--connect", action="store_true", help="also over Spark Connect")
    parser.add_argument("--shapes", action="store_true", help="also with PS shapes on the simulated cluster")
    args = parser.parse_args()
    if args.shapes and not args.hosts:
        args.hosts = 3
    with contextlib.ExitStack() as stack:
        jvm_cache = stack.enter_context(tempfile.TemporaryDirectory())
        variants = {"local": lambda: run_here(jvm_cache, [])}
        if args.hosts:
            from simcluster import SimCluster, require, sweep

            require()
            sweep()
            cluster = stack.enter_context(SimCluster(hosts=args.hosts))
            variants[f"{args.hosts} hosts"] = lambda: run_on_edge(cluster, jvm_cache, [])
            if args.shapes:
                variants[f"{args.hosts} hosts, PS shape"] = lambda: run_on_edge(cluster, jvm_cache, SHAPES)
        if args.connect:
            from connect_server import ConnectServer

            server = ConnectServer(os.path.join(stack.enter_context(tempfile.TemporaryDirectory()),
                                                "server.log")).start()
            stack.callback(server.stop)
            variants["Spark Connect"] = lambda: run_here(jvm_cache, ["--remote", server.url])

        cold = run_here(jvm_cache, [])
        print(f"cold run (local): {_shown(cold)}", flush=True)
        runs = {name: [] for name in variants}
        for i in range(args.runs):
            for name, run in variants.items():
                runs[name].append(run())
                print(f"round {i + 1} {name}: {_shown(runs[name][-1])}", flush=True)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in TARGETS} for name, rs in runs.items()}
    print(f"\ncold local run: first step {cold['first step']:.1f} s, teardown {cold['teardown']:.1f} s\n")
    print("| variant | measure | runs (s) | median s | vs local | target s | median / target |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for name, rs in runs.items():
        for key, target in TARGETS.items():
            m = med[name][key]
            print(f"| {name} | {key} | {', '.join(f'{r[key]:.1f}' for r in rs)} | {m:.1f} | "
                  f"{m / med['local'][key]:.2f} | {target:.0f} | {m / target:.2f} |")
    if args.shapes:
        plain, shaped = med[f"{args.hosts} hosts"], med[f"{args.hosts} hosts, PS shape"]
        print(f"\nPS shape vs none on the same cluster: first step {shaped['first step'] / plain['first step']:.2f}x,"
              f" teardown {shaped['teardown'] / plain['teardown']:.2f}x (target first step <= 1.5x)")


if __name__ == "__main__":
    main()
