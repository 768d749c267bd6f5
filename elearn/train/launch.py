"""Starting a training process, the same way in both modes, and reading how it ended.

PS mode starts one on the driver's host as TensorFlow's chief (the coordinator); allreduce mode
starts one in every worker's Spark task for every attempt of the group. Either way
:class:`TrainerProcess` starts ``python -m elearn.train.trainer`` at once, so that TensorFlow
imports (about 6 CPU-seconds) while whatever it needs is still being decided, then sends it its
``(TrainSpec, Attempt)`` on stdin once known (PS mode: when the cluster has formed; allreduce mode:
right away). Its output goes to a log, and also to this process's stdout where the user watches
(the coordinator's prints). It writes its :class:`TrainOutcome` to ``attempt.result`` last.

The payload travels on stdin, as a TF server's cluster spec does: nothing to clean up on disk, and
the pipe's end is also how the child learns its parent is gone (``procs.exit_when_parent_goes``).
"""
from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from typing import BinaryIO

from elearn.cluster.procs import popen_child, stop_process
from elearn.storage.jsonlines import read_json, write_json

TRAINER = "elearn.train.trainer"
_LENGTH = struct.Struct("<Q")


@dataclass(frozen=True)
class TrainOutcome:
    """How one training process ended: ``ok``, or the job's own error (``kind`` ``"user"``: another
    attempt would fail the same way) or a lost process of the cluster (``"cluster"``)."""

    ok: bool
    kind: str = ""            # "user" | "cluster" when not ok
    error: str = ""           # "ValueError: ..." (first 4000 characters)
    traceback: str = ""
    model_dir: str | None = None
    died: bool = False        # it wrote no outcome: killed, or crashed below Python

    def write(self, path: str) -> None:
        write_json(path, asdict(self))

    @staticmethod
    def read(path: str, code: int | None) -> "TrainOutcome":
        """The outcome the process with exit code ``code`` wrote; one that wrote none died."""
        try:
            return TrainOutcome(**read_json(path))
        except (OSError, ValueError, TypeError):
            return TrainOutcome(False, "cluster", f"the training process exited with {code} without a result",
                                died=True)


# The file a training process touches every few seconds from its first moment (allreduce mode's
# node tells hung from slow by it): given at spawn, so the beat covers TensorFlow's import, which
# alone takes longer than a short --heartbeat-timeout on a loaded host.
HEARTBEAT_ENV = "ELEARN_HEARTBEAT"


def trainer_env(env: dict, tf_log: bool, import_log: str) -> dict:
    """``env`` for a training process: TensorFlow's C++ start-up lines (CUDA probing, absl) go to
    ``import_log`` instead of the output the user reads, unless ``--tf-log``."""
    env = dict(env)
    if not tf_log:
        env.update(TF_CPP_MIN_LOG_LEVEL="3", ELEARN_TF_IMPORT_LOG=import_log)
    return env


def write_payload(pipe: BinaryIO, spec, attempt) -> None:
    data = pickle.dumps((spec, attempt))
    pipe.write(_LENGTH.pack(len(data)) + data)
    pipe.flush()


def read_payload(pipe: BinaryIO):
    """``(TrainSpec, Attempt)`` from ``pipe``; None when the parent closed it first."""
    head = pipe.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    data = pipe.read(_LENGTH.unpack(head)[0])
    return pickle.loads(data)


class TrainerProcess:
    """One training process: started now, told what to run with :meth:`send`.

    ``log_path`` receives its output; with ``echo`` every line is also written to this process's
    ``sys.stdout`` (a terminal, a log, a notebook cell), else the child writes the log directly.
    """

    def __init__(self, env: dict, log_path: str, echo: bool = False):
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        self.log_path = log_path
        self._echo = None
        cmd = [sys.executable, "-u", "-m", TRAINER]
        if echo:
            self.proc = popen_child(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=env)
            self._echo = threading.Thread(target=_echo, args=(self.proc.stdout, log_path),
                                          name=f"elearn-trainer-{self.proc.pid}-output", daemon=True)
            self._echo.start()
        else:
            with open(log_path, "ab") as out:
                self.proc = popen_child(cmd, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                        env=env)
        self.attempt = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, spec, attempt) -> None:
        """What to run; the process starts ``train`` once it has it (and TensorFlow)."""
        self.attempt = attempt
        if os.path.exists(attempt.result):
            os.remove(attempt.result)
        try:
            write_payload(self.proc.stdin, spec, attempt)
        except BrokenPipeError:
            # It died before reading its job: left to the caller's poll, which finds no outcome and
            # reports the exit code (a lost process, restarted like any other).
            pass

    def poll(self) -> int | None:
        return self.proc.poll()

    def outcome(self) -> TrainOutcome:
        """How the process ended (call once it has exited)."""
        return TrainOutcome.read(self.attempt.result, self.proc.poll())

    def stop(self, grace: float = 3.0) -> int | None:
        code = stop_process(self.proc, grace=grace)
        if self._echo is not None:
            self._echo.join(5)  # the last lines train printed come before what follows
        return code


def _echo(pipe, log_path: str) -> None:
    """Copy a child's output, line by line, to ``log_path`` and to the current ``sys.stdout``."""
    with pipe, open(log_path, "ab") as log_file:
        for line in iter(pipe.readline, b""):
            log_file.write(line)
            log_file.flush()
            try:
                sys.stdout.write(line.decode("utf-8", "replace"))
                sys.stdout.flush()
            except (OSError, ValueError):  # the driver's stdout is gone: the log still has it
                pass
