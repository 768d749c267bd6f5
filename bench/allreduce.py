"""Allreduce-mode training throughput against plain TensorFlow, side by side in one run.

    python bench/allreduce.py [--rows 200000] [--rounds 2]

(a) plain single-process TensorFlow/Keras with the data in memory (tf.data.from_tensor_slices),
(a') the same with the batches built once and cached (``.batch().cache().repeat()``: no per-row
     work per epoch, the fastest plain input pipeline, for a fair comparison),
(b) elearn allreduce mode with --workers 1 (Spark feed, spool, TF child process),
(c) elearn allreduce mode with --workers 2 (two TF processes, MultiWorkerMirroredStrategy).
The same model, data, per-worker batch and epochs everywhere; only the training phase after a
warm-up epoch is timed (examples/s), not start-up or the feed.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def plain(rows: int, out: str, cached: bool = False) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    sys.path.insert(0, HERE)
    from allreduce_model import BATCH, EPOCHS, FEATURES, Timer, build_model, make_data

    x, y = make_data(rows)
    steps = -(-rows // BATCH)
    ds = tf.data.Dataset.from_tensor_slices(({f: x[:, i] for i, f in enumerate(FEATURES)}, y))
    ds = ds.batch(BATCH).cache().repeat() if cached else ds.repeat().batch(BATCH)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    model = build_model(keras)
    timer = Timer(keras, steps * BATCH)
    model.fit(ds, epochs=EPOCHS, steps_per_epoch=steps, verbose=0, callbacks=[timer])
    with open(out, "w") as f:
        json.dump({"examples_per_s": timer.rate(), "steps_per_epoch": steps}, f)


def run(cmd, out):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    with open(out) as f:
        return json.load(f)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2,
                        help="run a, b, c this many times, interleaved; the best of each is shown")
    parser.add_argument("--plain-out", help=argparse.SUPPRESS)
    parser.add_argument("--cached", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_out:
        return plain(args.rows, args.plain_out, args.cached)
    work = tempfile.mkdtemp(prefix="elearn-bench-allreduce-")
    names = {"a": "(a) plain TF, data in memory", "a'": "(a') plain TF, batches cached",
             "b": "(b) elearn --workers 1", "c": "(c) elearn --workers 2"}
    rates = {k: [] for k in names}
    for r in range(args.rounds):
        # Interleaved rounds: on a shared machine a burst of load then hits every variant alike.
        for key, extra in (("a", []), ("a'", ["--cached"])):
            out = os.path.join(work, f"plain-{r}{len(extra)}.json")
            rates[key].append(run([sys.executable, __file__, "--rows", args.rows, "--plain-out", out,
                                   *extra], out)["examples_per_s"])
        for key, workers in (("b", 1), ("c", 2)):
            out = os.path.join(work, f"elearn-{workers}-{r}.json")
            rates[key].append(run(
                [sys.executable, "-m", "plsubmit.cli", os.path.join(HERE, "allreduce_job.py"),
                 "--workers", workers, "--work-dir", work, "--quiet", "--arg", f"rows={args.rows}",
                 "--arg", f"out={out}"], out)["examples_per_s"])
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in rates.items()), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    base = max(rates["a"])
    print(f"\n{args.rows:,} rows, {os.cpu_count()} cores, best of {args.rounds} interleaved rounds\n")
    fair = max(rates["a'"])
    vs_fair = "vs (a')"
    print(f"{'variant':32} {'examples/s':>12} {'vs (a)':>8} {vs_fair:>8}   all rounds")
    for key, name in names.items():
        best = max(rates[key])
        print(f"{name:32} {best:>12,.0f} {best / base:>7.2f}x {best / fair:>7.2f}x   "
              f"{', '.join(f'{v:,.0f}' for v in rates[key])}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
