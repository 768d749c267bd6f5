"""Does a checkpoint written with N parameter servers restore into M, optimizer slots included?

    python bench/reshard_probe.py [--write 2] [--read 3,1,2] [--optimizers ...]

Plain TensorFlow, no elearn: each phase runs in a fresh process holding an in-process cluster
(one worker and the parameter servers as ``tf.distribute.Server``s, the process itself the chief
running ``ParameterServerStrategy``). Every variable is split over all parameter servers
(``FixedShardsPartitioner``). The write phase trains a small embedding model a few steps with each
optimizer, so that slots hold values no initializer gives, and writes a ``tf.train.Checkpoint``
of the model and optimizer plus every value as the whole, unsharded array. Each read phase builds
the same model and optimizer over another number of parameter servers and restores in two orders:

  built first    slots created (``optimizer.build`` / legacy ``_create_all_weights``), then restore;
  restore first  restore, then the first step's slot creation: what happens when a job restores
                 before training, as Keras ``fit`` callbacks do (deferred restoration).

and compares every restored value, slot by slot, with what was written. Per optimizer and order
the verdict is ``identical``, ``DIFFERENT`` (which values, and whether they kept their initial
values) or the error raised.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile

import numpy as np

OPTIMIZERS = ["adagrad", "adagrad_legacy", "ftrl", "ftrl_legacy", "adam", "adam_legacy", "sgd_momentum"]
VOCAB, DIM, STEPS = 64, 4, 5


def _ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def cluster(num_ps: int):
    """An in-process cluster of 1 worker and ``num_ps`` PS; returns the strategy (this process is the chief)."""
    import tensorflow as tf

    ports = _ports(num_ps + 2)
    spec = {"worker": [f"127.0.0.1:{ports[0]}"], "ps": [f"127.0.0.1:{p}" for p in ports[1:-1]],
            "chief": [f"127.0.0.1:{ports[-1]}"]}
    # Several servers in one process need inter-op threads for each peer's calls (else deadlock).
    config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=num_ps + 3)
    servers = [tf.distribute.Server(tf.train.ClusterSpec(spec), job_name=job, task_index=i, config=config,
                                    protocol="grpc", start=True)
               for job in ("worker", "ps") for i in range(len(spec[job]))]
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(spec), task_type="chief", task_id=0, rpc_layer="grpc")
    strategy = tf.distribute.ParameterServerStrategy(
        resolver, variable_partitioner=tf.distribute.experimental.partitioners.FixedShardsPartitioner(num_ps))
    return strategy, servers


def make_optimizer(keras, name):
    o, legacy = keras.optimizers, keras.optimizers.legacy
    return {"adagrad": lambda: o.Adagrad(0.1), "adagrad_legacy": lambda: legacy.Adagrad(0.1),
            "ftrl": lambda: o.Ftrl(0.1), "ftrl_legacy": lambda: legacy.Ftrl(0.1),
            "adam": lambda: o.Adam(0.01), "adam_legacy": lambda: legacy.Adam(0.01),
            "sgd_momentum": lambda: o.SGD(0.1, momentum=0.9)}[name]()


def build(keras, name):
    ids = keras.Input(shape=(3,), dtype="int64")
    x = keras.layers.Embedding(VOCAB, DIM, name="table")(ids)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(1, name="head")(x)
    return keras.Model(ids, out), make_optimizer(keras, name)


def create_slots(opt, model):
    if hasattr(opt, "_create_all_weights"):          # legacy OptimizerV2
        opt._create_all_weights(model.trainable_variables)
    else:
        opt.build(model.trainable_variables)


def strays(variables) -> list:
    """Slot variables named ``ShardedVariable/...``: what a legacy optimizer makes when a checkpoint
    restores slots of a sharded variable before the optimizer created them (whole-table copies
    beside the per-shard slots the updates use)."""
    return [v for v in variables if v.name.startswith("ShardedVariable/")]


def whole(variables) -> dict:
    """{name without shard suffix: full array}: shards concatenated in part order."""
    parts: dict = {}
    variables = [v for v in variables if not v.name.startswith("ShardedVariable/")]
    for v in variables:
        if hasattr(v, "variables") and type(v).__name__ == "ShardedVariable":
            shards = list(v.variables)
        else:
            shards = [v]
        for s in shards:
            name = s.name.split(":")[0]
            m = re.search(r"/part_(\d+)", name)
            key = re.sub(r"/part_\d+", "", name)
            parts.setdefault(key, []).append((int(m.group(1)) if m else 0, np.asarray(s.numpy())))
    out = {}
    for key, items in parts.items():
        arrays = [a for _, a in sorted(items, key=lambda t: t[0])]
        out[key] = np.concatenate(arrays, 0) if arrays[0].ndim else arrays[0]
    return out


def opt_variables(opt):
    v = opt.variables
    return v() if callable(v) else v


def semantic(values: dict) -> dict:
    """Names made comparable across runs: Keras adds _1, _2 suffixes to layer/optimizer names."""
    return {re.sub(r"_\d+(?=/|$)", "", k): v for k, v in values.items()}


def phase_write(num_ps: int, names, directory: str):
    import tensorflow as tf
    import tf_keras as keras

    strategy, _servers = cluster(num_ps)
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    report = {}
    for name in names:
        with strategy.scope():
            model, opt = build(keras, name)
            create_slots(opt, model)

        @tf.function
        def step():
            def replica():
                ids = tf.random.uniform([32, 3], 0, VOCAB, tf.int64)
                y = tf.cast(tf.reduce_sum(ids, 1, keepdims=True) % 2, tf.float32)
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean((model(ids) - y) ** 2)
                grads = tape.gradient(loss, model.trainable_variables)
                opt.apply_gradients(zip(grads, model.trainable_variables))
                return loss
            return strategy.run(replica)

        for _ in range(STEPS):
            coordinator.schedule(step)
        coordinator.join()
        path = tf.train.Checkpoint(model=model, optimizer=opt).write(os.path.join(directory, name, "ckpt"))
        values = {**semantic(whole(model.variables)), **{"opt:" + k: v for k, v in
                                                         semantic(whole(opt_variables(opt))).items()}}
        np.savez(os.path.join(directory, name, "values.npz"), **values)
        report[name] = {"path": path, "values": sorted(values)}
    print(json.dumps(report), flush=True)


def phase_read(num_ps: int, names, directory: str):
    import tensorflow as tf
    import tf_keras as keras

    strategy, _servers = cluster(num_ps)
    report = {}
    for name in names:
        with np.load(os.path.join(directory, name, "values.npz")) as z:
            want = {k: z[k] for k in z.files}
        path = os.path.join(directory, name, "ckpt")
        for order in ("built first", "restore first"):
            try:
                with strategy.scope():
                    model, opt = build(keras, name)
                    fresh_slots = None
                    if order == "built first":
                        create_slots(opt, model)
                        fresh_slots = semantic(whole(opt_variables(opt)))
                        status = tf.train.Checkpoint(model=model, optimizer=opt).read(path)
                    else:
                        status = tf.train.Checkpoint(model=model, optimizer=opt).read(path)
                        create_slots(opt, model)
                        fresh = make_optimizer(keras, name)
                        create_slots(fresh, model)
                        fresh_slots = semantic(whole(opt_variables(fresh)))
                got = {**semantic(whole(model.variables)),
                       **{"opt:" + k: v for k, v in semantic(whole(opt_variables(opt))).items()}}
                try:
                    status.assert_existing_objects_matched()
                    matched = "all matched"
                except AssertionError as exc:
                    matched = f"assert_existing_objects_matched: {str(exc)[:300]}"
                diffs, same = [], []
                stray = strays(opt_variables(opt))
                if stray:
                    saved = [v for k, v in want.items() if k.startswith("opt:")]
                    holds = sum(any(x.shape == v.shape and np.array_equal(x.numpy(), v) for v in saved)
                                for x in stray)
                    diffs.append(f"{len(stray)} extra whole-table slot variables ({holds} hold the "
                                 "saved values; the updates use the per-shard slots)")
                for k, v in want.items():
                    if k not in got:
                        diffs.append(f"{k}: missing after restore")
                    elif got[k].shape != v.shape:
                        diffs.append(f"{k}: shape {got[k].shape} != {v.shape}")
                    elif not np.array_equal(got[k], v):
                        init = fresh_slots.get(k[4:]) if k.startswith("opt:") else None
                        kept = init is not None and np.array_equal(got[k], init)
                        diffs.append(f"{k}: differs" + (" (still its initial value)" if kept else ""))
                    else:
                        same.append(k)
                report.setdefault(name, {})[order] = {
                    "verdict": "identical" if not diffs else "DIFFERENT", "diffs": diffs,
                    "identical": len(same), "compared": len(want), "matched": matched}
            except Exception as exc:  # reported, not hidden: the point of the probe
                report.setdefault(name, {})[order] = {"verdict": "ERROR",
                                                      "error": f"{type(exc).__name__}: {str(exc)[:600]}"}
    print(json.dumps(report), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", type=int, default=2)
    p.add_argument("--read", default="3,1,2")
    p.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    p.add_argument("--phase", help=argparse.SUPPRESS)
    p.add_argument("--ps", type=int, help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    names = args.optimizers.split(",")
    if args.phase:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        (phase_write if args.phase == "write" else phase_read)(args.ps, names, args.dir)
        sys.stdout.flush()
        os._exit(0)
    directory = tempfile.mkdtemp(prefix="elearn-reshard-")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

    def phase(kind, ps):
        proc = subprocess.run([sys.executable, __file__, "--phase", kind, "--ps", str(ps), "--dir", directory,
                               "--optimizers", args.optimizers], capture_output=True, text=True, env=env,
                              timeout=1800)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"{kind} with {ps} PS failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        return json.loads(lines[-1])

    written = phase("write", args.write)
    print(f"written with {args.write} PS: " + ", ".join(f"{n} ({len(r['values'])} arrays)" for n, r in written.items()))
    results = {int(ps): phase("read", int(ps)) for ps in args.read.split(",")}
    print(f"\n| optimizer | restore order | " + " | ".join(f"{args.write} -> {ps} PS" for ps in results) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in results) + " |")
    for name in names:
        for order in ("built first", "restore first"):
            cells = []
            for ps, rep in results.items():
                r = rep[name][order]
                if r["verdict"] == "ERROR":
                    cells.append(f"ERROR {r['error'][:160]}")
                elif r["verdict"] == "identical":
                    cells.append(f"identical ({r['compared']} arrays)")
                else:
                    cells.append(f"DIFFERENT: {'; '.join(r['diffs'])[:300]}")
            print(f"| {name} | {order} | " + " | ".join(cells) + " |")
    print(f"\ndetails: {json.dumps(results)[:6000]}")


if __name__ == "__main__":
    main()
