"""CPU cost of one training step of bench/ctr_model.py's DeepFM in one process, by variant.

    python bench/ctr_probe.py [--steps 100] [--batch 1024] [--variants plain mwms mwms@scale=0.1 ...]

Each variant runs in a fresh process: the model is built (optionally under
MultiWorkerMirroredStrategy with one worker), trained on cached in-memory batches for one warm-up
call of ``fit``, then for ``--steps`` steps while the process's CPU time (all threads) is read before
and after. CPU time, not wall time, is the measure: it barely moves with other load on a shared
machine. Keys of ``NAME@key=value,...``: ``keras`` (tf_keras|keras), ``scale`` (vocabulary
multiplier), ``tables`` (field|one), ``lookup`` (keras|unique), ``optimizer``, ``spe``.
Names: ``plain`` (no strategy), ``mwms`` (MultiWorkerMirroredStrategy, one worker).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def probe(name: str, opts: dict, steps: int, batch: int) -> dict:
    import importlib

    import numpy as np
    import tensorflow as tf

    import ctr_model

    keras = importlib.import_module(opts.get("keras", "tf_keras"))
    scale = float(opts.get("scale", 1.0))
    spe = int(opts.get("spe", 25))
    rng = np.random.default_rng(1)
    rows = batch * 50
    cols = {f: rng.normal(size=rows).astype(np.float32) for f in ctr_model.FLOATS}
    for f, v in zip(ctr_model.FIELDS, ctr_model.vocab_sizes(scale)):
        cols[f] = ctr_model._zipf_ids(rng, v, rows)
    y = (rng.random(rows) < 0.25).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((cols, y)).batch(batch).cache().repeat()
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if name == "mwms" else tf.distribute.get_strategy()
    with strategy.scope():
        model = ctr_model.build_model(keras, scale, opts.get("lookup", "keras"), opts.get("tables", "field"))
        ctr_model.compile_model(keras, model, opts.get("optimizer", "adagrad"), spe)
    model.fit(ds, epochs=1, steps_per_epoch=2 * spe, verbose=0)       # tracing, first steps
    t, c = time.perf_counter(), time.process_time()
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return {"cpu_ms_per_step": 1e3 * cpu / steps, "wall_ms_per_step": 1e3 * wall / steps,
            "cpu_us_per_example": 1e6 * cpu / (steps * batch)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["plain", "mwms", "plain@scale=0.1", "mwms@scale=0.1",
                                                     "mwms@tables=one", "plain@tables=one"])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        name, _, rest = args.one.partition("@")
        opts = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
        print(json.dumps(probe(name, opts, args.steps, args.batch)), flush=True)
        os._exit(0)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    results: dict = {}
    for r in range(args.rounds):
        for v in args.variants:
            proc = subprocess.run([sys.executable, __file__, "--one", v, "--steps", str(args.steps),
                                   "--batch", str(args.batch)], capture_output=True, text=True, env=env)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                print(f"{v}: failed\n{proc.stderr[-3000:]}", flush=True)
                continue
            res = json.loads(lines[-1])
            results.setdefault(v, []).append(res)
            print(f"round {r + 1} {v}: {res['cpu_ms_per_step']:.1f} CPU ms/step, "
                  f"{res['wall_ms_per_step']:.1f} wall ms/step", flush=True)
    base = min(x["cpu_ms_per_step"] for x in results.get(args.variants[0], [{"cpu_ms_per_step": float("nan")}]))
    print(f"\nbatch {args.batch}, {args.steps} steps after warm-up, best of {args.rounds}; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print(f"| variant | CPU ms/step | CPU us/example | vs {args.variants[0]} |")
    print("| --- | ---: | ---: | ---: |")
    for v, rs in results.items():
        best = min(rs, key=lambda x: x["cpu_ms_per_step"])
        print(f"| {v} | {best['cpu_ms_per_step']:.1f} | {best['cpu_us_per_example']:.1f} | "
              f"{best['cpu_ms_per_step'] / base:.2f} |")


if __name__ == "__main__":
    main()
