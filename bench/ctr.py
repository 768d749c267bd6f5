"""A Criteo-shaped DeepFM on elearn against plain TensorFlow, side by side in one run.

    python bench/ctr.py [--batches 1024,4096] [--epochs 3] [--rounds 1]
                        [--variants plain ps1x1 ps1x2 ps2x2 ar1 ar2]

The model and data are bench/ctr_model.py's (4.69M ids, 400,000 training rows, Zipf ids, labels
from a planted teacher). Every variant runs in a process tree of its own, one after the other,
variants interleaved within each round; examples/s are taken from epoch-end timestamps after the
first epoch (start-up, the feed and tracing are not counted) and AUC on 50,000 held-out rows after
the last. While a variant trains, /proc is sampled every 0.5 s: CPU seconds of each of its
processes between the first and the last epoch end, and their peak RSS.

Variants (``NAME`` or ``NAME@key=value,...``):
  plain           tf_keras in one process, the rows in memory as cached batches
  plain-k3        the same with Keras 3
  mwms, mwms-k3   tf_keras / Keras 3 under MultiWorkerMirroredStrategy, one worker, one process
  tfps            plain TF ParameterServerStrategy: coordinator + 1 PS + 1 worker started by hand,
                  the worker reading the rows from memory as cached batches (no elearn, no Spark)
  psPxW           elearn PS mode, --ps P --workers W (e.g. ps1x1, ps2x2)
  arW             elearn allreduce mode, --workers W (Keras 3 unless keras=tf_keras)
keys: spe (steps_per_execution, default 25), lookup (keras|unique|elearn), tables (field|one),
optimizer (adagrad|adagrad_legacy|adam|ftrl|ftrl_legacy|sgd), keras (keras|tf_keras, allreduce),
intra / inter (TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS for every process of the variant),
probe=reader (allreduce: time the worker's dataset alone first).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import ctr_model  # noqa: E402

HOLDOUT = 50_000
TICK = os.sysconf("SC_CLK_TCK")


# -- variants ------------------------------------------------------------------------------------
def parse_variant(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition("@")
    opts = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
    return name, opts


def thread_env(opts: dict) -> dict:
    env = {}
    if "intra" in opts:
        env["TF_NUM_INTRAOP_THREADS"] = opts["intra"]
    if "inter" in opts:
        env["TF_NUM_INTEROP_THREADS"] = opts["inter"]
    return env


# -- /proc sampling --------------------------------------------------------------------------------
def read_proc(path: str, mode="r"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError:
        return None


def classify_process(pid: int, root: int) -> str:
    cmd = (read_proc(f"/proc/{pid}/cmdline") or "").split("\0")
    line = " ".join(cmd)
    if "elearn.runtime.tf_server" in line:
        env = read_proc(f"/proc/{pid}/environ") or ""
        for item in env.split("\0"):
            if item.startswith("ELEARN_NODE="):
                return "TF " + json.loads(item.split("=", 1)[1]).get("role", "?")
        return "TF server"
    if "elearn.train.trainer" in line:
        return "trainer"
    if "--tf-server" in cmd[:-1]:
        return "TF " + cmd[cmd.index("--tf-server") + 1]
    if cmd and cmd[0].endswith("java"):
        return "ZooKeeper JVM" if "ZooKeeperServerMain" in line else "Spark JVM"
    if "pyspark" in line or "daemon" in line:
        return "Spark python"
    if pid == root:
        return "driver python"
    return "other: " + os.path.basename(cmd[0]) if cmd and cmd[0] else "other"


class Sampler(threading.Thread):
    """CPU seconds and peak RSS of every process under ``root``, sampled every ``every`` s."""

    def __init__(self, root: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.root, self.every = root, every
        self.samples: list = []          # (time, {pid: cpu seconds}, machine busy seconds)
        self.kind: dict = {}
        self.hwm: dict = {}
        self._cmdlines: dict = {}
        self.stop = threading.Event()

    def _tree(self) -> list:
        children: dict = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                stat = read_proc(f"/proc/{d}/stat")
                if stat:
                    ppid = int(stat.rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(d))
        out, todo = [], [self.root]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(children.get(p, []))
        return out

    def _machine_busy(self) -> float:
        fields = (read_proc("/proc/stat") or "cpu 0").splitlines()[0].split()[1:]
        v = list(map(int, fields))
        return (sum(v) - v[3] - (v[4] if len(v) > 4 else 0)) / TICK

    def run(self):
        while not self.stop.is_set():
            now, cpu = time.time(), {}
            for pid in self._tree():
                stat = read_proc(f"/proc/{pid}/stat")
                if not stat:
                    continue
                f = stat.rsplit(")", 1)[1].split()
                cpu[pid] = (int(f[11]) + int(f[12])) / TICK
                # Classified anew each time: a process seen right after fork (or as the launcher
                # script) becomes a JVM or a TF server only at its exec.
                # An exited process not yet reaped (a zombie) reads as an empty command line: it
                # keeps the kind it had, or its peak RSS would be counted as "other".
                cmdline = read_proc(f"/proc/{pid}/cmdline")
                if cmdline and self._cmdlines.get(pid) != cmdline:
                    self._cmdlines[pid] = cmdline
                    try:
                        self.kind[pid] = classify_process(pid, self.root)
                    except (ValueError, IndexError):  # read mid-exec: classified at the next sample
                        self._cmdlines[pid] = None
                status = read_proc(f"/proc/{pid}/status") or ""
                for ln in status.splitlines():
                    if ln.startswith("VmHWM:"):
                        self.hwm[pid] = max(self.hwm.get(pid, 0), int(ln.split()[1]) * 1024)
            self.samples.append((now, cpu, self._machine_busy()))
            self.stop.wait(self.every)

    def cpu_between(self, t0: float, t1: float) -> tuple[dict, float]:
        """CPU seconds per process kind between t0 and t1, and the machine's busy CPU seconds."""
        def at(t):
            best = min(self.samples, key=lambda s: abs(s[0] - t))
            return best
        a, b = at(t0), at(t1)
        per: dict = {}
        for pid, c in b[1].items():
            kind = self.kind.get(pid, "other")
            per[kind] = per.get(kind, 0.0) + c - a[1].get(pid, 0.0)
        scale = (t1 - t0) / max(b[0] - a[0], 1e-9)     # samples are up to `every` off the stamps
        return {k: v * scale for k, v in per.items()}, (b[2] - a[2]) * scale

    def peak_rss(self) -> dict:
        per: dict = {}
        for pid, v in self.hwm.items():
            kind = self.kind.get(pid, "other")
            per[kind] = max(per.get(kind, 0), v)
        return per


# -- running one variant -------------------------------------------------------------------------------
def run_variant(variant: str, batch: int, args, data: str, work: str) -> dict:
    name, opts = parse_variant(variant)
    out = os.path.join(work, f"{name}-{batch}-{time.time_ns()}.jsonl")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, HERE]), "TF_CPP_MIN_LOG_LEVEL": "3",
           **thread_env(opts)}
    common = {"batch": batch, "epochs": args.epochs, "spe": opts.get("spe", args.spe), "scale": args.scale,
              "optimizer": opts.get("optimizer", args.optimizer), "lookup": opts.get("lookup", "keras"),
              "tables": opts.get("tables", "field")}
    if name.startswith("ps") or name.startswith("ar"):
        if name.startswith("ps"):
            ps, workers = map(int, name[2:].split("x"))
        else:
            ps, workers = 0, int(name[2:])
        job_args = {**common, "data": data, "out": out, "keras": opts.get("keras", "keras")}
        if "probe" in opts:
            job_args["probe"] = opts["probe"]
        cmd = [sys.executable, "-m", "plsubmit.cli", os.path.join(HERE, "jobs", "ctr_job.py"),
               "--ps", str(ps), "--workers", str(workers), "--work-dir", work, "--quiet",
               "--checkpoint-every", "off", "--register-timeout", "900"]
        for k, v in job_args.items():
            cmd += ["--arg", f"{k}={v}"]
    else:
        cmd = [sys.executable, __file__, "--run-plain", name, "--out", out, "--data", data,
               "--plain-opts", json.dumps({**common, "keras": opts.get("keras")})]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    sampler = Sampler(proc.pid)
    sampler.start()
    try:
        log, _ = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        raise SystemExit(f"{variant} timed out:\n{log[-3000:]}")
    finally:
        sampler.stop.set()
        sampler.join()
    records = []
    if os.path.exists(out):
        with open(out) as f:
            records = [json.loads(ln) for ln in f]
    epochs = [r for r in records if "epoch" in r]
    final = next((r for r in records if "auc" in r), None)
    if proc.returncode != 0 or final is None or len(epochs) < 2:
        raise SystemExit(f"{variant} batch {batch} failed (exit {proc.returncode}):\n{log[-4000:]}")
    t0, t1 = epochs[0]["time"], epochs[-1]["time"]
    rate = sum(e["examples"] for e in epochs[1:]) / (t1 - t0)
    cpu, machine = sampler.cpu_between(t0, t1)
    extra = {k: v for r in records for k, v in r.items() if k.startswith("reader")}
    return {"variant": variant, "batch": batch, "rate": rate, "auc": final["auc"], "cpu": cpu,
            "wall": t1 - t0, "machine_cpu": machine, "rss": sampler.peak_rss(),
            "losses": [e["loss"] for e in epochs], "final": final, **extra}


# -- plain TensorFlow variants (run in a child process of this script) ------------------------------------
def cached_batches(tf, columns: dict, batch: int):
    x = ctr_model.model_inputs(columns)
    return (tf.data.Dataset.from_tensor_slices((x, columns[ctr_model.LABEL]))
            .batch(batch).cache().repeat().prefetch(tf.data.AUTOTUNE))


def stamps_callback(keras, out: str, examples: int):
    class Stamps(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            with open(out, "a") as f:
                f.write(json.dumps({"epoch": epoch, "time": time.time(), "examples": examples,
                                    "loss": float((logs or {}).get("loss", float("nan")))}) + "\n")
    return Stamps()


def finish(model, data: str, out: str, **extra):
    test = ctr_model.load(os.path.join(data, "test.npz"))
    t = time.time()
    scores = ctr_model.predict(model, test)
    with open(out, "a") as f:
        f.write(json.dumps({"auc": ctr_model.auc(test[ctr_model.LABEL], scores),
                            "eval_seconds": time.time() - t, **extra}) + "\n")


def run_plain(name: str, out: str, data: str, o: dict):
    import importlib

    import tensorflow as tf

    if name == "tfps":
        return run_tfps(out, data, o)
    module = o.get("keras") or ("keras" if name.endswith("-k3") else "tf_keras")
    keras = importlib.import_module(module)
    train = ctr_model.load(os.path.join(data, "train.npz"))
    batch, rows = int(o["batch"]), len(train[ctr_model.LABEL])
    steps = -(-rows // batch)
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if name.startswith("mwms") else None
    scope = strategy.scope() if strategy else _null()
    with scope:
        model = ctr_model.build_model(keras, float(o["scale"]), o["lookup"], o["tables"])
        ctr_model.compile_model(keras, model, o["optimizer"], int(o["spe"]))
    ds = cached_batches(tf, train, batch)
    model.fit(ds, epochs=int(o["epochs"]), steps_per_epoch=steps, verbose=0,
              callbacks=[stamps_callback(keras, out, steps * batch)])
    finish(model, data, out, keras=module)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# -- plain TF ParameterServerStrategy, three processes started by hand ---------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_columns(data: str) -> dict:
    """The training rows as one raw little-endian file per column (read natively by a worker)."""
    import numpy as np

    directory = os.path.join(data, "raw")
    train = ctr_model.load(os.path.join(data, "train.npz"))
    files = {}
    os.makedirs(directory, exist_ok=True)
    for k, v in train.items():
        path = os.path.join(directory, f"{k}.{v.dtype.name}")
        if not os.path.exists(path):
            np.ascontiguousarray(v).tofile(path + ".tmp")
            os.replace(path + ".tmp", path)
        files[k] = (path, v.dtype.name)
    return files


def run_tfps(out: str, data: str, o: dict):
    """Start a PS and a worker server as child processes, then coordinate from this process."""
    cluster = {"ps": [f"127.0.0.1:{_free_port()}"], "worker": [f"127.0.0.1:{_free_port()}"],
               "chief": [f"127.0.0.1:{_free_port()}"]}
    servers = [subprocess.Popen([sys.executable, __file__, "--tf-server", role, "--cluster", json.dumps(cluster)])
               for role in ("ps", "worker")]
    try:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        os.environ["GRPC_FAIL_FAST"] = "use_caller"
        import tensorflow as tf
        import tf_keras as keras

        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type="chief", task_id=0, rpc_layer="grpc")
        strategy = tf.distribute.ParameterServerStrategy(
            resolver, variable_partitioner=tf.distribute.experimental.partitioners.MinSizePartitioner(
                min_shard_bytes=256 << 10, max_shards=1))
        files = raw_columns(data)
        batch, epochs = int(o["batch"]), int(o["epochs"])
        rows = os.path.getsize(files[ctr_model.LABEL][0]) // 4
        steps = -(-rows // batch)

        def dataset_fn(_context=None):
            cols = {k: tf.io.decode_raw(tf.io.read_file(p), tf.as_dtype(d)) for k, (p, d) in files.items()}
            return cached_batches(tf, cols, batch)

        with strategy.scope():
            model = ctr_model.build_model(keras, float(o["scale"]), o["lookup"], o["tables"])
            ctr_model.compile_model(keras, model, o["optimizer"], int(o["spe"]))
        model.fit(keras.utils.experimental.DatasetCreator(dataset_fn), epochs=epochs, steps_per_epoch=steps,
                  verbose=0, callbacks=[stamps_callback(keras, out, steps * batch)])
        finish(model, data, out, keras="tf_keras")
    finally:
        for s in servers:
            s.terminate()
        for s in servers:
            s.wait()
        os._exit(0)  # the coordinator's threads can hold the interpreter at exit


def tf_server(role: str, cluster: dict):
    sys.modules["keras"] = None    # a server never needs Keras
    import tensorflow as tf

    del sys.modules["keras"]
    server = tf.distribute.Server(tf.train.ClusterSpec(cluster), job_name=role, task_index=0,
                                  protocol="grpc", start=True)
    server.join()


# -- the table --------------------------------------------------------------------------------------------------
def mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def report(results: list, args, teacher: float, load: tuple):
    base = {}
    for r in results:
        if parse_variant(r["variant"])[0] == "plain" and r["variant"] == "plain":
            base[r["batch"]] = max(base.get(r["batch"], 0), r["rate"])
    best: dict = {}
    for r in results:
        key = (r["variant"], r["batch"])
        if key not in best or r["rate"] > best[key]["rate"]:
            best[key] = r
    print(f"\nCriteo-shaped DeepFM, {ctr_model.table_bytes(args.scale) / 2**20:,.0f} MiB of id tables "
          f"(scale {args.scale}), {args.rows:,} rows, {args.epochs} epochs (the first not timed), "
          f"optimizer {args.optimizer}, best of {args.rounds} round(s); teacher AUC {teacher:.4f}; "
          f"{os.cpu_count()} cores; load average at start {load[0]:.1f}, at end {os.getloadavg()[0]:.1f}\n")
    print("examples/s: after the first epoch; CPU us/example: CPU seconds of all the variant's processes over "
          "the same epochs per example (robust to other load on the machine, unlike examples/s)\n")
    print("| variant | batch | examples/s | vs plain | CPU us/example | CPU vs plain | AUC | our CPU cores "
          "| machine busy cores | rounds |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    cost = {b: sum(r["cpu"].values()) / (r["rate"] * r["wall"]) for (v, b), r in best.items() if v == "plain"}
    for (variant, batch), r in best.items():
        runs = [x["rate"] for x in results if x["variant"] == variant and x["batch"] == batch]
        ours = sum(r["cpu"].values()) / r["wall"]
        vs = f"{r['rate'] / base[batch]:.2f}" if batch in base else ""
        us = sum(r["cpu"].values()) / (r["rate"] * r["wall"])
        vs_cpu = f"{us / cost[batch]:.2f}" if batch in cost else ""
        print(f"| {variant} | {batch} | {r['rate']:,.0f} | {vs} | {us * 1e6:.1f} | {vs_cpu} | {r['auc']:.4f} | {ours:.2f} | "
              f"{r['machine_cpu'] / r['wall']:.2f} | {', '.join(f'{x:,.0f}' for x in runs)} |")
    print("\nCPU seconds per process kind between the first and the last epoch end (cores used = CPU s / wall s):\n")
    kinds = sorted({k for r in best.values() for k in r["cpu"]})
    print("| variant | batch | wall s | " + " | ".join(kinds) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in kinds) + " |")
    for (variant, batch), r in best.items():
        print(f"| {variant} | {batch} | {r['wall']:.1f} | " +
              " | ".join(f"{r['cpu'][k]:.1f}" if k in r["cpu"] else "" for k in kinds) + " |")
    tables = ctr_model.table_bytes(args.scale)
    print(f"\nPeak RSS (MiB) per process kind; id tables {mib(tables)} MiB, with Adagrad's accumulators "
          f"{mib(2 * tables)} MiB:\n")
    kinds = sorted({k for r in best.values() for k in r["rss"]})
    print("| variant | batch | " + " | ".join(kinds) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in kinds) + " |")
    for (variant, batch), r in best.items():
        print(f"| {variant} | {batch} | " + " | ".join(mib(r["rss"][k]) if k in r["rss"] else "" for k in kinds)
              + " |")
    for (variant, batch), r in best.items():
        if "reader_rows_per_s" in r:
            cpu = r.get("reader_cpu_us_per_row")
            print(f"\n{variant} batch {batch}: the worker's dataset alone reads "
                  f"{r['reader_rows_per_s']:,.0f} rows/s ({', '.join(f'{x:,.0f}' for x in r['reader_rounds'])})"
                  + (f", {cpu:.2f} CPU us per row" if cpu else ""))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["plain", "ps1x1", "ps1x2", "ps2x2", "ar1", "ar2"])
    p.add_argument("--batches", default="1024,4096")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--rows", type=int, default=400_000)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--spe", type=int, default=25)
    p.add_argument("--optimizer", default="adagrad")
    p.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "elearn-bench-ctr-data"))
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--json", help="also write every run's record here")
    p.add_argument("--run-plain", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--plain-opts", help=argparse.SUPPRESS)
    p.add_argument("--tf-server", help=argparse.SUPPRESS)
    p.add_argument("--cluster", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.tf_server:
        return tf_server(args.tf_server, json.loads(args.cluster))
    if args.run_plain:
        return run_plain(args.run_plain, args.out, args.data, json.loads(args.plain_opts))
    load = os.getloadavg()
    data_key = f"r{args.rows}-s{args.scale}"
    data = os.path.join(args.data_dir, data_key)
    _, teacher = ctr_model.cached_data(data, args.rows, HOLDOUT, args.scale)
    work = tempfile.mkdtemp(prefix="elearn-bench-ctr-")
    results = []
    try:
        for rnd in range(args.rounds):
            for batch in map(int, args.batches.split(",")):
                for variant in args.variants:
                    r = run_variant(variant, batch, args, data, work)
                    results.append(r)
                    print(f"round {rnd + 1} batch {batch} {variant}: {r['rate']:,.0f} ex/s, AUC {r['auc']:.4f}, "
                          f"CPU {', '.join(f'{k} {v:.1f}' for k, v in sorted(r['cpu'].items()))} "
                          f"in {r['wall']:.1f}s", flush=True)
                    if args.json:
                        with open(args.json, "a") as f:
                            f.write(json.dumps(r) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, args, teacher, load)


if __name__ == "__main__":
    main()
