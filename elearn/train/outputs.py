"""Where a training process's products go: checkpoints, the exported model, TensorBoard events and
the application's events and metrics.

TensorFlow writes each of them to a directory of the process that saves: TensorFlow 2.21 has no
``s3://`` or ``hdfs://`` file system, and the place the user named may be on another host's disk
(the default is the driver's ``~/.elearn/apps/<app>``, and an allreduce chief runs on an executor).
When this process can write the place itself (a path on the driver's host and we are on it, or a
``file://`` directory mounted on every host), TensorFlow writes there directly. Otherwise it writes
to a staging directory on this host and elearn moves the files with :mod:`elearn.storage.stores`: to object
storage or HDFS through ``pyarrow.fs``, or to the driver's disk through the driver's file service.

Checkpoints move in the background: a save returns once TensorFlow has written it locally, and a
thread stores the new checkpoint's data files, then its ``.index``, then the ``checkpoint`` state
naming it, then deletes what the state no longer names. A crash at any point leaves the previous
state naming a complete checkpoint. A restore fetches the checkpoint the stored state names.
"""
from __future__ import annotations

import glob
import os
import queue
import shutil
import threading
from dataclasses import dataclass

from elearn.errors import StorageError
from elearn.storage.mirror import Mirror
from elearn.storage.stores import Storage, open_storage, parse_location

STATE = "checkpoint"  # TensorFlow's checkpoint state file: names the latest checkpoint


@dataclass
class Output:
    """One place seen from this process: TensorFlow uses ``local``; ``storage`` is where the files
    must end up when ``local`` is only a staging directory (None: ``local`` is the place)."""

    uri: str
    local: str
    storage: Storage | None = None

    @property
    def direct(self) -> bool:
        return self.storage is None


def reach(uri: str, staging: str, files=None, on_driver_host: bool = True) -> Output:
    """How this process reaches ``uri``: directly, or through ``staging`` and a Storage.

    ``files`` is the driver's file service endpoint (None when every process runs on the driver's
    host); ``on_driver_host`` says whether this process does."""
    location = parse_location(uri)
    if location.kind == "shared" or (location.kind == "local" and (on_driver_host or files is None)):
        return Output(uri, location.path)
    return Output(uri, staging, open_storage(location, files, on_driver_host))


class CheckpointStore:
    """One directory of checkpoints (``ckpt-N.*`` and their state file) as this process sees it."""

    def __init__(self, output: Output):
        self.output = output
        self._uploads: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def local(self) -> str:
        return self.output.local

    def fetch_latest(self, into: str | None = None) -> str | None:
        """Make the latest stored checkpoint readable locally (in ``into``, default ``local``);
        its path prefix, or None when there is none yet."""
        import tensorflow as tf

        target = into or self.local
        storage = self.output.storage
        if storage is None:
            return tf.train.latest_checkpoint(self.local)
        try:
            state = storage.read_bytes(STATE).decode()
        except StorageError:
            return None  # nothing stored yet (or not reachable: a fresh start, said by the caller)
        name = _latest_name(state)
        if name is None:
            return None
        os.makedirs(target, exist_ok=True)
        for rel in storage.list(""):
            if "/" not in rel and rel.startswith(name + "."):
                storage.get_file(rel, os.path.join(target, rel))
        with open(os.path.join(target, STATE), "w") as f:  # names only what was fetched
            f.write(f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')
        return os.path.join(target, name)

    def saved(self, prefix: str) -> None:
        """A checkpoint was just written at ``prefix`` in ``local``: store it, in the background."""
        if self.output.storage is None:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._upload_loop, name="elearn-checkpoint-upload",
                                            daemon=True)
            self._thread.start()
        self._uploads.put(prefix)

    def _upload_loop(self) -> None:
        while True:
            prefix = self._uploads.get()
            try:
                if prefix is not None and self._error is None:
                    self._upload(prefix)
            except BaseException as exc:  # reported by flush()
                self._error = exc
            finally:
                self._uploads.task_done()

    def _upload(self, prefix: str) -> None:
        storage = self.output.storage
        name = os.path.basename(prefix)
        files = sorted(glob.glob(prefix + ".*"))
        data = [f for f in files if not f.endswith(".index")]
        for path in data + [f for f in files if f.endswith(".index")]:
            storage.put_file(path, os.path.basename(path))
        state_path = os.path.join(self.local, STATE)
        with open(state_path) as f:
            state = f.read()
        if _latest_name(state) == name:
            storage.write_bytes(STATE, state.encode())
        keep = set(_all_names(state))
        for rel in storage.list(""):   # checkpoints max_to_keep dropped, after the new state
            stem = rel.split(".", 1)[0]
            if "/" not in rel and rel != STATE and stem.startswith("ckpt-") and stem not in keep:
                storage.delete(rel)

    def flush(self, timeout: float = 3600.0) -> None:
        """Wait until every checkpoint saved so far is stored; raise if one could not be."""
        if self._thread is not None:
            done = threading.Event()

            def wait():
                self._uploads.join()
                done.set()

            threading.Thread(target=wait, daemon=True).start()
            if not done.wait(timeout):
                raise StorageError(f"checkpoints were not stored in {self.output.uri} within {timeout:.0f}s")
        if self._error is not None:
            raise StorageError(f"storing a checkpoint in {self.output.uri} failed: {self._error}") from self._error


def publish_model(staged: str, output: Output) -> str:
    """Store the SavedModel exported to ``staged`` at ``output`` (saved_model.pb last); its URI."""
    if output.storage is None:
        return output.uri
    output.storage.delete_tree("")
    output.storage.put_tree(staged)
    shutil.rmtree(staged, ignore_errors=True)
    return output.uri


def _latest_name(state: str) -> str | None:
    for line in state.splitlines():
        if line.startswith("model_checkpoint_path:"):
            return os.path.basename(line.split(":", 1)[1].strip().strip('"'))
    return None


def _all_names(state: str) -> list[str]:
    return [os.path.basename(line.split(":", 1)[1].strip().strip('"')) for line in state.splitlines()
            if line.startswith("all_model_checkpoint_paths:")]


class Outputs:
    """Everything one training process writes, and where it ends up.

    ``keep`` is False for a process whose products are thrown away (an allreduce worker other than
    the chief saves like the chief, since saving may run collectives, into ``scratch``); it still
    restores from the kept checkpoints."""

    def __init__(self, spec, staging: str, keep: bool, scratch: str | None = None):
        self.spec, self.staging, self.keep = spec, staging, keep
        here = spec.on_driver_host

        def place(uri: str, name: str) -> Output:
            return reach(uri, os.path.join(staging, name), spec.files, here)

        self.checkpoints = place(spec.checkpoint_uri, "checkpoints")
        if keep:
            self.model, self.logs = place(spec.model_uri, "model"), place(spec.log_dir, "tensorboard")
        else:
            self.model, self.logs = (Output(os.path.join(scratch, d), os.path.join(scratch, d))
                                     for d in ("model", "tensorboard"))
        self._scratch = scratch
        self._stores: dict[str, CheckpointStore] = {}
        self._app = None if here or spec.files is None else spec.files.storage_for(spec.app_dir)
        self._mirror = None
        if not self.logs.direct:

            os.makedirs(self.logs.local, exist_ok=True)
            self._mirror = Mirror(self.logs.storage, every=5.0).add(self.logs.local, "").start()

    @property
    def checkpoint_dir(self) -> str:
        """Where this process's TensorFlow writes checkpoints."""
        return self.checkpoints.local if self.keep else os.path.join(self._scratch, "checkpoints")

    def checkpoint_stores(self, name: str = "") -> tuple[CheckpointStore, CheckpointStore | None]:
        """``(where saves go, where restores come from when that is elsewhere)`` for ``name``."""
        kept = self._kept(name)
        if self.keep:
            return kept, None
        own = CheckpointStore(Output("", os.path.join(self.checkpoint_dir, name)))
        return own, kept

    def _kept(self, name: str) -> CheckpointStore:
        if name not in self._stores:
            uri = parse_location(self.spec.checkpoint_uri).join(name).uri if name else self.spec.checkpoint_uri
            self._stores[name] = CheckpointStore(reach(uri, os.path.join(self.staging, "checkpoints", name),
                                                       self.spec.files, self.spec.on_driver_host))
        return self._stores[name]

    def record(self, name: str, line: str) -> None:
        """Append one line to the application's file ``name`` (events.jsonl, metrics.jsonl)."""
        if self._app is not None:
            self._app.append_bytes(name, (line + "\n").encode())
        else:
            with open(os.path.join(self.spec.app_dir, name), "a") as f:
                f.write(line + "\n")

    def finish(self, model_dir: str | None) -> str | None:
        """After ``train``: every checkpoint stored, TensorBoard events sent, the model published;
        the model's final place (None without a model, or when this process's is not kept)."""
        for store in self._stores.values():
            store.flush()
        if self._mirror is not None:
            self._mirror.stop()
        if model_dir is None or not self.keep:
            return None
        return publish_model(model_dir, self.model)
