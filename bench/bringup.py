"""Bring-up and teardown of a PS cluster (--ps 1 --workers 2), median of N runs, side by side.

    python bench/bringup.py [--runs 3] [--hosts 3] [--connect] [--shapes] [--jvm-cache DIR]

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

    python bench/bringup.py --tree /tmp/old-elearn [--tree ...]   # other versions side by side
    python bench/bringup.py --timeline [--runs N] [--tree ...]    # where the time goes

``--tree DIR`` adds a variant that runs elearn from another source tree (``git worktree add DIR
COMMIT``, or ``git archive COMMIT | tar -x -C DIR``) first on every process's import path, the same
job on local Spark: finding the commit that made a start slower takes interleaved rounds, not one
run before and one after on a machine whose load moves.

``--timeline`` traces warm local submits (of the installed elearn and of every ``--tree``,
interleaved) and prints each one's processes, events and critical path to the first step, then the
critical path's milestones side by side (``bench/timeline``: an import hook in every Python process,
a /proc sample for the JVMs, Spark's event log; nothing in elearn is changed for it).
``--jvm-cache DIR`` keeps the class-data archive between invocations (no cold run once it holds one).
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
sys.path.insert(0, HERE)
JOB = os.path.join(HERE, "jobs", "first_step.py")
TARGETS = {"first step": 10.0, "teardown": 2.5}
SHAPES = ["--ps-cores", "1", "--ps-memory", "1g"]


def _times(out: str, t0: float, t_exit: float, output: str) -> dict:
    try:
        with open(out) as f:
            times = json.load(f)
    except OSError:
        raise SystemExit(f"the run left no times in {out}:\n{output[-3000:]}")
    return {"first step": times["first_step"] - t0, "teardown": t_exit - times["train_end"]}


def _run(cmd: list, timeout: float = 1800, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a session of its own: on a timeout, every process of the submit
    (the driver JVM, ZooKeeper, TF servers) is killed, not only pl_submit."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run_here(jvm_cache: str, extra: list, tree: str | None = None) -> dict:
    """One pl_submit on this host (local Spark, or --remote); ``tree``: elearn from that source
    tree instead of the installed one (first on every process's import path)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "times.json")
        env = {**os.environ, "ELEARN_HOME": tmp, "ELEARN_JVM_CACHE": jvm_cache}
        if tree:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (tree, os.environ.get("PYTHONPATH")) if p)
        t0 = time.time()
        proc = _run([sys.executable, "-m", "plsubmit.cli", JOB, "--ps", "1", "--workers", "2",
                     "--quiet", "--arg", f"out={out}", *extra], env=env, cwd=tree or ROOT)
        t_exit = time.time()
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        return _times(out, t0, t_exit, proc.stderr)


def run_traced(jvm_cache: str, tree: str | None = None) -> tuple[dict, str]:
    """One local pl_submit with every process traced (``bench/timeline``); (times, timeline report)."""
    from timeline.analyze import ProcSampler, Timeline, read_event_log, read_trace

    with tempfile.TemporaryDirectory() as tmp:
        out, trace, spark_log = (os.path.join(tmp, n) for n in ("times.json", "trace.jsonl", "spark-events"))
        os.makedirs(spark_log)
        path = [os.path.join(HERE, "timeline"), tree, os.environ.get("PYTHONPATH")]
        env = {**os.environ, "ELEARN_HOME": tmp, "ELEARN_JVM_CACHE": jvm_cache, "ELEARN_TIMELINE": trace,
               "PYTHONPATH": os.pathsep.join(p for p in path if p)}
        sampler = ProcSampler()
        sampler.start()
        t0 = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "plsubmit.cli", JOB, "--ps", "1", "--workers", "2",
                                 "--quiet", "--arg", f"out={out}", "--conf", "spark.eventLog.enabled=true",
                                 "--conf", f"spark.eventLog.dir=file://{spark_log}",
                                 "--conf", "spark.eventLog.compress=false",
                                 "--conf", "spark.eventLog.rolling.enabled=false"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=tree or ROOT, start_new_session=True)
        sampler.watch(proc.pid, t0)
        try:
            output, _ = proc.communicate(timeout=1800)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            raise
        t_exit = time.time()
        sampler.stop()
        if proc.returncode != 0:
            raise SystemExit(output[-3000:])
        times = _times(out, t0, t_exit, output)
        timeline = Timeline(t0, t0 + times["first step"], read_trace(trace), sampler.procs,
                            read_event_log(spark_log), sampler.offset)
        return times, timeline


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
    parser.add_argument("--tree", action="append", default=[], metavar="DIR",
                        help="also with elearn from this source tree (a worktree or an export of an "
                             "older commit), local Spark; repeatable")
    parser.add_argument("--jvm-cache", metavar="DIR",
                        help="the class-data archive's folder (default: a fresh one); when it already "
                             "holds an archive, no cold run")
    parser.add_argument("--timeline", action="store_true",
                        help="trace warm local submits (--runs of them, default 1) and print each one's "
                             "timeline and critical path; with --tree, of that tree instead")
    args = parser.parse_args()
    if args.timeline:
        return timeline(args)
    if args.shapes and not args.hosts:
        args.hosts = 3
    with contextlib.ExitStack() as stack:
        jvm_cache, warm = stack.enter_context(_jvm_cache(args))
        variants = {"local": lambda: run_here(jvm_cache, [])}
        for tree in args.tree:
            tree = os.path.abspath(tree)
            variants[f"local, {os.path.basename(tree.rstrip(os.sep))}"] = \
                lambda tree=tree: run_here(jvm_cache, [], tree)
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

        cold = None if warm else run_here(jvm_cache, [])
        if cold:
            print(f"cold run (local): {_shown(cold)}", flush=True)
        runs = {name: [] for name in variants}
        for i in range(args.runs):
            for name, run in variants.items():
                runs[name].append(run())
                print(f"round {i + 1} {name}: {_shown(runs[name][-1])}", flush=True)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in TARGETS} for name, rs in runs.items()}
    if cold:
        print(f"\ncold local run: first step {cold['first step']:.1f} s, teardown {cold['teardown']:.1f} s\n")
    print("| variant | measure | runs (s) | median s | vs local | target s | median / target |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for name, rs in runs.items():
        for key, target in TARGETS.items():
            m = med[name][key]
            print(f"| {name} | {key} | {', '.join(f'{r[key]:.1f}' for r in rs)} | {m:.1f} | "
                  f"{m / med['local'][key]:.2f} | {target:g} | {m / target:.2f} |")
    if args.shapes:
        plain, shaped = med[f"{args.hosts} hosts"], med[f"{args.hosts} hosts, PS shape"]
        print(f"\nPS shape vs none on the same cluster: first step {shaped['first step'] / plain['first step']:.2f}x,"
              f" teardown {shaped['teardown'] / plain['teardown']:.2f}x (target first step <= 1.5x)")


@contextlib.contextmanager
def _jvm_cache(args):
    """(folder, holds an archive already): ``--jvm-cache`` or a fresh temporary folder."""
    if args.jvm_cache:
        os.makedirs(args.jvm_cache, exist_ok=True)
        yield args.jvm_cache, any(n.endswith(".jsa") for n in os.listdir(args.jvm_cache))
        return
    with tempfile.TemporaryDirectory() as folder:
        yield folder, False


def timeline(args) -> None:
    """``--timeline``: a cold run to write the JVM class-data archive, then traced warm runs of the
    installed elearn and of every ``--tree``, interleaved round by round."""
    variants = {"installed": None, **{os.path.basename(os.path.abspath(t).rstrip(os.sep)): os.path.abspath(t)
                                      for t in args.tree}}
    runs = args.runs if "--runs" in sys.argv else 1
    results = {name: [] for name in variants}
    with _jvm_cache(args) as (jvm_cache, warm):
        if not warm:
            cold = run_here(jvm_cache, [])
            print(f"cold run (untraced, writes the class-data archive): {_shown(cold)}", flush=True)
        for i in range(runs):
            for name, tree in variants.items():
                times, tl = run_traced(jvm_cache, tree)
                results[name].append((times, tl))
                print(f"round {i + 1} {name}: {_shown(times)}, load average {os.getloadavg()[0]:.1f}", flush=True)
    for name, rs in results.items():
        times, tl = sorted(rs, key=lambda r: r[0]["first step"])[len(rs) // 2]
        print(f"\n## {name}: the traced run with the median first step ({_shown(times)})\n", flush=True)
        print(tl.report(), flush=True)
    print("\n## Critical-path milestones side by side (s from submit, median of the runs; "
          "the last column: each variant's own critical path)\n")
    medians = {}
    for name, rs in results.items():
        per = [tl.milestones() for _, tl in rs]
        medians[name] = {k: statistics.median(m[k] - tl.t0 for m, (_, tl) in zip(per, rs) if k in m)
                         for k in dict.fromkeys(k for m in per for k in m)}
    order = sorted(dict.fromkeys(k for m in medians.values() for k in m),
                   key=lambda k: min(m.get(k, 1e9) for m in medians.values()))
    print("| milestone | " + " | ".join(variants) + " |")
    print("| --- | " + " | ".join("---:" for _ in variants) + " |")
    on_path = {name: {n for n, _ in sorted(rs, key=lambda r: r[0]["first step"])[len(rs) // 2][1].critical_path()}
               for name, rs in results.items()}
    for k in order:
        cells = [f"{medians[n][k]:.2f}{' *' if k in on_path[n] else ''}" if k in medians[n] else ""
                 for n in variants]
        print(f"| {k} | " + " | ".join(cells) + " |")
    print("\n(* on that variant's critical path)")


if __name__ == "__main__":
    main()
