"""pl_submit: run an elearn job on Spark, in the style of spark-submit.

The flags are those of ``elearn.submit``; ``--conf``, ``--arg`` and ``--fill`` may be repeated.
"""
from __future__ import annotations

import os
import signal
import sys

import fire

REPEATABLE = ("--conf", "--arg", "--fill")


def run(job_file: str, ps: int = 0, workers: int = 1, master: str | None = None,
        zk: str | None = None, app_name: str | None = None, checkpoint_dir: str | None = None,
        model_dir: str | None = None, work_dir: str | None = None, conf=None, arg=None,
        job_class: str | None = None, register_timeout: float = 120.0,
        feed_timeout: float = 3600.0, max_restarts: int = 3, heartbeat_timeout: float = 120.0,
        runtime: str = "tf", fill=None,
        ps_cores: int | None = None, ps_memory: str | None = None, worker_cores: int | None = None,
        worker_memory: str | None = None, worker_gpus: int | None = None,
        archives: str | None = None, conda_env: str | None = None, venv: str | None = None,
        tf_log: bool = False, tensorboard: bool = False, quiet: bool = False):
    """Run JOB_FILE's SparkTFJob subclass on Spark with TensorFlow.

    pl_submit my_job.py --ps 2 --workers 8 --master yarn --conf spark.executor.memory=8g --arg epochs=3

    Args:
      job_file: Python file defining one subclass of elearn.SparkTFJob.
      ps: Parameter servers. N > 0 runs PS mode (ParameterServerStrategy; train runs in a
        coordinator process on the driver host); 0 runs allreduce mode (MultiWorkerMirroredStrategy,
        train runs in every worker).
      workers: TF workers; each is one Spark task fed one partition of the DataFrame.
      master: Spark master URL (local[K], local-cluster[N,C,M], spark://..., yarn, k8s://...).
        Default: local[ps + workers], enough task slots for every node.
      zk: ZooKeeper HOST:PORT[,HOST:PORT][/chroot] where nodes meet. Default: an embedded server.
      app_name: Application id. Re-running with the same name and checkpoint dir resumes.
      checkpoint_dir: Where checkpoints go (shared storage on a real cluster).
      model_dir: Where the model returned by train() is exported.
      work_dir: Root of the per-application directory (logs, events, summary). Default ~/.elearn/apps.
      conf: Spark configuration KEY=VALUE; repeat for more.
      arg: Job argument KEY=VALUE, in self.args; values parse as Python literals. Repeatable.
      job_class: Which subclass to run when the file defines several.
      register_timeout: Seconds to wait for every node to register before failing.
      feed_timeout: Seconds to wait for the workers to spool the DataFrame.
      max_restarts: Restarts of a failed node (PS mode) or of the group (allreduce mode).
      heartbeat_timeout: Allreduce mode: seconds without a heartbeat from a worker's TF process
        (frozen, or stuck holding Python's lock) before the group is restarted.
      runtime: Allreduce mode's runtime: tf (MultiWorkerMirroredStrategy) or horovod.
      fill: COLUMN=VALUE used for nulls in that column of every fed dataset. Repeatable.
      ps_cores: Cores per PS executor (a ResourceProfile where the cluster manager supports it).
      ps_memory: Memory per PS executor, e.g. 8g.
      worker_cores: Cores per worker executor.
      worker_memory: Memory per worker executor.
      worker_gpus: GPUs per worker task.
      archives: A conda-pack or venv-pack archive (.tar.gz, .tgz, .tar, .zip) shipped as the
        executors' Python environment; executors and TF processes run its bin/python.
      conda_env: A conda environment (name or prefix) packed with conda-pack now and shipped like
        --archives; the archive is cached by content, so an unchanged environment is packed once.
      venv: A virtualenv directory packed with venv-pack now and shipped like --archives (cached).
        Its archive links to the venv's base interpreter, which must exist on every host.
      tf_log: Let TensorFlow's and Spark's own log output through.
      tensorboard: Start TensorBoard on the driver over the application's log dir and print its URL.
      quiet: Print only errors.
    """
    from elearn import submit
    from elearn.config import parse_kv
    from elearn.job import parse_job_args

    # fire reads "--app-name 123" as a number; names are text.
    app_name, job_class = (None if v is None else str(v) for v in (app_name, job_class))
    options = dict(ps=ps, workers=workers, master=master, zk=zk, app_name=app_name,
                   checkpoint_dir=checkpoint_dir, model_dir=model_dir, work_dir=work_dir,
                   conf=parse_kv(conf, "--conf"), args=parse_job_args(arg), job_class=job_class,
                   register_timeout=register_timeout, feed_timeout=feed_timeout,
                   max_restarts=max_restarts, heartbeat_timeout=heartbeat_timeout, runtime=runtime,
                   fill=parse_job_args(fill), ps_cores=ps_cores,
                   ps_memory=ps_memory, worker_cores=worker_cores, worker_memory=worker_memory,
                   worker_gpus=worker_gpus, archives=archives, conda_env=conda_env, venv=venv,
                   tf_log=tf_log, tensorboard=tensorboard, quiet=quiet)
    result = submit(job_file, **options)
    if not result.ok:
        if result.traceback:
            print(result.traceback, file=sys.stderr, end="")
        print(f"pl_submit: {result.error}", file=sys.stderr)
        raise SystemExit(1)


def _gather_repeats(argv: list[str]) -> list[str]:
    """fire keeps only the last of a repeated flag; fold ``--conf a --conf b`` into one list."""
    out, found = [], {}
    i = 0
    while i < len(argv):
        tok = argv[i]
        name, eq, value = tok.partition("=")
        if name in REPEATABLE:
            if not eq:
                if i + 1 >= len(argv):
                    out.append(tok)
                    break
                value = argv[i + 1]
                i += 1
            found.setdefault(name, []).append(value)
        else:
            out.append(tok)
        i += 1
    for name, values in found.items():
        out += [name, repr(values)]
    return out


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] == "help" or "-h" in argv or "--help" in argv:
        from plsubmit.help import render

        print(render(run))
        raise SystemExit(0 if argv else 2)
    signal.signal(signal.SIGTERM, _terminate)
    code = 0
    try:
        if argv and argv[0] in ("list", "status", "kill"):
            from plsubmit import control

            code = fire.Fire(control.COMMANDS, argv, name="pl_submit") or 0
        else:
            code = fire.Fire(run, _gather_repeats(argv), name="pl_submit")
    except KeyboardInterrupt:
        print("pl_submit: interrupted; the application was stopped", file=sys.stderr)
        code = 130
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except Exception as exc:  # an ElearnError from option or job-file checks
        from elearn.errors import ElearnError

        if not isinstance(exc, ElearnError):
            raise
        print(f"pl_submit: {exc}", file=sys.stderr)
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    # TensorFlow's coordinator threads can stall interpreter exit; everything of ours is stopped.
    os._exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
