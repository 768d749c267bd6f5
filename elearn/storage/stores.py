"""Where checkpoints, exported models, TensorBoard events and node logs live, and one small API to
put and get them there.

TensorFlow writes every file to the local disk of the process that saves it; this module moves
finished files to where the user asked for them and back. A location is one of:

- **local**: a plain path on the driver's host (the default, ``~/.elearn/apps/<app>/...``). The
  driver writes there directly; a node on another host reaches it through the driver's file
  service (:mod:`elearn.storage.driverfs`), because executors cannot see the driver's disk.
- **shared**: ``file:///path``, a directory mounted at the same place on every host (NFS, a
  cluster file system). Every process uses it directly.
- **remote**: ``s3://`` (also ``s3a://``), ``gs://`` (also ``gcs://``), ``hdfs://``, ``viewfs://``,
  ``abfs://`` / ``abfss://``, served through ``pyarrow.fs`` (TensorFlow 2.21 has no S3 or HDFS
  file system any more; pyarrow's are maintained and already installed).

:func:`open_storage` gives a :class:`Storage` for any of them, with the same methods, so callers
(checkpoint upload after each save, the model export, log streaming, restores) never ask which one.

Design notes, with what was measured on this project's machine (pyarrow 26.0.1):

- Filesystems are always built with ``pyarrow.fs.FileSystem.from_uri``: it is what honours
  ``AWS_ENDPOINT_URL`` (a bare ``S3FileSystem()`` does not), the URI's query options and the
  bucket-region lookup. ``from_uri`` takes no timeouts, and its defaults are long: a ``HeadObject``
  against an endpoint that accepts connections but never answers took 99 s to fail, a refused
  endpoint 6 s, and ``gs://`` without credentials had not failed after 120 s (the GCS client
  retries for up to 15 minutes). So the S3 and GCS filesystems ``from_uri`` built are rebuilt from
  their own resolved options (``__reduce__``, the pickling path, which keeps default-chain
  credentials unresolved) with a connect timeout, a stall limit and a bounded retry count (S3), or
  a retry time limit (GCS). pyarrow documents ``request_timeout`` as ignored on Linux; measured, it
  is curl's low-speed limit there (a request with no byte flowing for that long fails), which is
  the right kind of limit for multi-gigabyte transfers. With the probe settings
  (:data:`PROBE_TIMEOUTS`) :func:`check_location` fails in 0.3 s on a refused endpoint and in
  4.2 s on a silent one (2 attempts of a 2 s stall); ``gs://`` without credentials in 5 s. Azure (``AzureFileSystem``) and
  HDFS expose no such knobs through pyarrow; their SDKs' own retry policies apply (a refused
  Azure endpoint: 6.4 s to fail), and :func:`check_location` bounds its probe with a wall-clock
  deadline for every scheme. Measured too: with failing Azure credentials,
  ``get_file_info("<container>")`` aborts the process (an uncaught C++ exception in pyarrow
  26.0.1), so nothing here asks Azure about a bare container.
- Object stores make an object visible whole when its upload completes, so a remote write goes
  straight to its final key; a SIGKILLed upload leaves nothing. pyarrow completes an upload when
  the stream is closed, also from its destructor, so a write that fails half-way commits a
  truncated object: it is deleted again before the error is raised. HDFS files are visible while
  being written, so HDFS writes go to a temporary name and are renamed into place (HDFS rename
  does not replace, so the old file is deleted first: a window of one RPC without the file).
  Local writes are a temporary file in the same directory and ``os.replace``.
- Files stream in chunks (8 MiB to pyarrow, 1 MiB over HTTP and locally): a multi-gigabyte
  checkpoint shard never sits in memory (the tests hold Python's peak under 24 MiB while a 40 MiB
  tree round-trips). A 100 MiB file, measured: local put 0.15 s, driver's service 0.14 s put and
  0.12 s get over loopback, moto's S3 server 2.7 s put and 1.2 s get (``bench/storage.py``).
- :meth:`Storage.put_tree` writes "index" files last (by default every ``*.index``, then
  ``checkpoint``, ``saved_model.pb``, ``training_metadata.json``): TensorFlow's
  ``checkpoint`` file and a SavedModel's ``saved_model.pb`` are what a reader picks a version by,
  and they must not appear before the data they name. A crash part-way through an upload then
  leaves the previous complete version as the one a reader picks. :meth:`Storage.get_tree` reads
  in the opposite order (index files first, then a fresh listing of the rest), so what it fetches
  while a writer uploads is a complete version.
- Credentials are never taken from elearn's flags: a URI carrying them (``s3://key:secret@...``,
  an Azure SAS token or client secret) is refused, and messages never repeat them.
"""
from __future__ import annotations

import abc
import datetime
import fnmatch
import io
import os
import posixpath
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterable

from elearn.errors import StorageError, StorageNotFound
from elearn.storage.localfiles import (TMP_PREFIX, LimitedReader, append_local, delete_tree_local, join_rel,
                                       list_local, local_files, write_atomic)
from elearn.storage.locations import SUPPORTED_SCHEMES, Location, clean_rel, parse_location

__all__ = ["Location", "parse_location", "check_location", "Storage", "LocalStorage", "RemoteStorage",
           "open_storage", "INDEX_LAST", "StorageError", "StorageNotFound", "SUPPORTED_SCHEMES"]


# The default "index last" rule of put_tree: files matching none of these go first; then the
# files matching each pattern, in this order. A TF checkpoint is ckpt-N.data-* then ckpt-N.index
# then the `checkpoint` file naming ckpt-N; a SavedModel is variables/* (data before index) then
# saved_model.pb; training_metadata.json marks a finished tree.
INDEX_LAST: tuple[str, ...] = ("*.index", "checkpoint", "saved_model.pb", "training_metadata.json")

_CHUNK = 8 << 20                   # pyarrow streams: 8 MiB (S3 multipart parts are >= 5 MiB)


# ------------------------------------------------------------------------------------- storage

class Storage(abc.ABC):
    """Files at one location. Paths are relative to it and ``/``-separated.

    Every method raises StorageError naming the location on failure (StorageNotFound for a file
    that is not there). Writes are atomic: a reader sees the old file or the new one, never a part
    (appends excepted: a reader of a growing log sees it grow). One instance may be used from many
    threads; keep it for the life of the job (a remote one resolves its bucket's region once) and
    open it where it is used: it does not travel to other processes, its Location does.
    """

    location: Location

    # -- primitives
    @abc.abstractmethod
    def put_file(self, local_path: str, path: str) -> None:
        """Store the local file ``local_path`` as ``path`` (streamed; replaces an existing file)."""

    @abc.abstractmethod
    def get_file(self, path: str, local_path: str) -> None:
        """Fetch ``path`` to ``local_path`` (streamed; the local file appears complete or not at all)."""

    @abc.abstractmethod
    def read_bytes(self, path: str) -> bytes:
        """The content of a small file."""

    @abc.abstractmethod
    def write_bytes(self, path: str, data: bytes) -> None:
        """Store ``data`` as ``path``, atomically."""

    @abc.abstractmethod
    def append_file(self, local_path: str, path: str, offset: int = 0) -> int:
        """Bring ``path`` up to date with a local file that only grows (a log, a TensorBoard event file).

        ``offset`` is how much of it the previous call stored (its return value; 0 the first time).
        Where appends exist (local, shared, the driver's service) only the new bytes travel, and
        only if the stored file still has exactly ``offset`` bytes; otherwise, and on object
        stores, which cannot append, the whole file is stored again. Returns the stored size, the
        ``offset`` of the next call.
        """

    @abc.abstractmethod
    def list(self, prefix: str = "") -> dict[str, int]:
        """Every file below ``prefix`` (recursively): path relative to the location -> size in bytes."""

    @abc.abstractmethod
    def exists(self, path: str) -> bool:
        """Whether a file or directory ``path`` exists."""

    @abc.abstractmethod
    def delete(self, path: str) -> None:
        """Delete the file ``path``; a missing file is not an error."""

    @abc.abstractmethod
    def delete_tree(self, prefix: str = "") -> None:
        """Delete everything below ``prefix`` (everything at the location for ``""``); missing is fine."""

    # -- trees, built on the primitives
    def put_tree(self, local_dir: str, prefix: str = "", last: Iterable[str] = INDEX_LAST, *,
                 skip_unchanged: bool = False, prune: bool = False,
                 progress: Callable[[str, int], None] | None = None) -> list[str]:
        """Store every file below ``local_dir`` under ``prefix``, index files last.

        ``last`` is the rule: glob patterns matched against each file's name (against its path
        below ``local_dir`` when the pattern has a ``/``). Files matching none are stored first, in
        path order; then the files matching each pattern, pattern by pattern in the order given.
        A crash part-way leaves the previous index naming the previous, complete data, as long as
        each version's data files have names of their own (TF checkpoints: ``ckpt-N.*``); a tree
        re-stored under the same names (a SavedModel) should go to a fresh prefix.

        ``skip_unchanged`` skips a non-index file already stored with the same size (checkpoint
        data files never change once written; do not use it for trees that are rewritten in
        place). ``prune`` then deletes stored files below ``prefix`` that ``local_dir`` no longer has
        (checkpoints ``max_to_keep`` dropped), after the index. ``progress(path, size)`` is called
        after each file is stored. Returns the stored paths in the order they were written.
        """
        prefix = clean_rel(prefix, allow_empty=True)
        if not os.path.isdir(local_dir):
            raise StorageError(f"cannot store {local_dir!r} in {self.location.uri}: not a directory")
        rules = (last,) if isinstance(last, str) else tuple(last)
        files = local_files(local_dir)
        stored = self.list(prefix) if (skip_unchanged or prune) else {}
        order = sorted(files, key=lambda rel: (_rank(rel, rules), rel))
        done = []
        for rel in order:
            dest = join_rel(prefix, rel)
            size = files[rel]
            if skip_unchanged and _rank(rel, rules) == 0 and stored.get(dest) == size:
                continue
            self.put_file(os.path.join(local_dir, *rel.split("/")), dest)
            done.append(dest)
            if progress is not None:
                progress(dest, size)
        if prune:
            keep = {join_rel(prefix, rel) for rel in files}
            for dest in sorted(set(stored) - keep, key=lambda p: -_rank(p, rules)):
                self.delete(dest)       # index files of dropped versions first, then their data
        return done

    def get_tree(self, prefix: str, local_dir: str, last: Iterable[str] = INDEX_LAST) -> list[str]:
        """Fetch every file below ``prefix`` into ``local_dir``; returns the paths fetched.

        The mirror image of :meth:`put_tree`: index files first (last rule reversed), then a fresh
        listing of the rest, so data a fetched index names was complete before the index was
        written, and is in the second listing. A data file deleted between listing and fetching
        (pruned by a writer meanwhile) is skipped.
        """
        prefix = clean_rel(prefix, allow_empty=True)
        rules = (last,) if isinstance(last, str) else tuple(last)
        os.makedirs(local_dir, exist_ok=True)
        fetched: list[str] = []

        def fetch(path: str) -> None:
            rel = path[len(prefix) + 1:] if prefix else path
            self.get_file(path, os.path.join(local_dir, *rel.split("/")))
            fetched.append(path)

        first = sorted((p for p in self.list(prefix) if _rank(p, rules)),
                       key=lambda p: (-_rank(p, rules), p))
        for path in first:
            fetch(path)
        for path in sorted(self.list(prefix)):
            if path in fetched:
                continue
            try:
                fetch(path)
            except StorageNotFound:
                if _rank(path, rules):
                    raise
        return fetched


def _rank(rel: str, rules: tuple[str, ...]) -> int:
    """0 for data files, 1 + the index of the first matching pattern for index files."""
    name = rel.rsplit("/", 1)[-1]
    for i, pattern in enumerate(rules):
        if fnmatch.fnmatchcase(rel if "/" in pattern else name, pattern):
            return i + 1
    return 0


# ------------------------------------------------------------------------------- local / shared

class LocalStorage(Storage):
    """A directory this process can see: a local location on the driver's host, or a shared mount."""

    def __init__(self, location: Location | str):
        self.location = parse_location(location)
        if self.location.kind == "remote":
            raise StorageError(f"{self.location.uri} is remote; use open_storage()")
        self.root = self.location.path

    def __repr__(self) -> str:
        return f"LocalStorage({self.location.uri!r})"

    def _path(self, path: str, allow_empty: bool = False) -> str:
        rel = clean_rel(path, allow_empty)
        return os.path.join(self.root, *rel.split("/")) if rel else self.root

    def _fail(self, op: str, path: str, exc: BaseException) -> StorageError:
        cls = StorageNotFound if isinstance(exc, FileNotFoundError) else StorageError
        return cls(f"{op} {os.path.join(self.root, path) if path else self.root} failed: "
                   f"{exc.__class__.__name__}: {exc}")

    def put_file(self, local_path: str, path: str) -> None:
        dest = self._path(path)
        try:
            if os.path.exists(dest) and os.path.samefile(local_path, dest):
                return              # the caller wrote it in place already
            with open(local_path, "rb") as src:
                write_atomic(dest, LimitedReader(src, os.fstat(src.fileno()).st_size),
                             os.fstat(src.fileno()).st_size)
        except OSError as exc:
            raise self._fail(f"storing {local_path} as", path, exc) from exc

    def get_file(self, path: str, local_path: str) -> None:
        src = self._path(path)
        try:
            if os.path.exists(local_path) and os.path.samefile(src, local_path):
                return
            with open(src, "rb") as f:
                write_atomic(local_path, f, os.fstat(f.fileno()).st_size)
        except OSError as exc:
            raise self._fail("fetching", path, exc) from exc

    def read_bytes(self, path: str) -> bytes:
        try:
            with open(self._path(path), "rb") as f:
                return f.read()
        except OSError as exc:
            raise self._fail("reading", path, exc) from exc

    def write_bytes(self, path: str, data: bytes) -> None:
        try:
            write_atomic(self._path(path), io.BytesIO(data), len(data))
        except OSError as exc:
            raise self._fail("writing", path, exc) from exc

    def append_file(self, local_path: str, path: str, offset: int = 0) -> int:
        dest = self._path(path)
        try:
            with open(local_path, "rb") as src:
                size = os.fstat(src.fileno()).st_size
                if os.path.exists(dest) and os.path.samefile(local_path, dest):
                    return size
                if size == offset and os.path.exists(dest) and os.stat(dest).st_size == offset:
                    return offset
                if size > offset:
                    src.seek(offset)
                    ok, _ = append_local(dest, src, size - offset, offset)
                    if ok:
                        return size
                src.seek(0)     # the stored copy is not what we think: store the whole file
                write_atomic(dest, src, size)
                return size
        except OSError as exc:
            raise self._fail(f"appending {local_path} to", path, exc) from exc

    def append_bytes(self, path: str, data: bytes) -> None:
        """Append ``data`` to ``path`` (records several writers add to, such as the events file)."""
        dest = self._path(path)
        try:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "ab") as f:
                f.write(data)
        except OSError as exc:
            raise self._fail("appending to", path, exc) from exc

    def list(self, prefix: str = "") -> dict[str, int]:
        try:
            return list_local(self.root, clean_rel(prefix, allow_empty=True))
        except OSError as exc:
            raise self._fail("listing", prefix, exc) from exc

    def exists(self, path: str) -> bool:
        return os.path.exists(self._path(path))

    def delete(self, path: str) -> None:
        try:
            os.unlink(self._path(path))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._fail("deleting", path, exc) from exc

    def delete_tree(self, prefix: str = "") -> None:
        try:
            delete_tree_local(self._path(prefix, allow_empty=True), keep_root=not clean_rel(prefix, True))
        except OSError as exc:
            raise self._fail("deleting the tree", prefix, exc) from exc


# ------------------------------------------------------------------------------------- remote

@dataclass(frozen=True)
class Timeouts:
    """How long one remote request may take before it fails.

    connect: seconds to open a connection. stall: seconds a request may go without a byte moving
    (a limit on silence, not on the length of a transfer). attempts: tries per request (S3).
    retry_limit: seconds the GCS client may spend retrying one request.
    """

    connect: float = 5.0
    stall: float = 30.0
    attempts: int = 3
    retry_limit: float = 60.0


DATA_TIMEOUTS = Timeouts()
# check_location: fail in seconds. One retry so a single dropped packet does not fail a job.
PROBE_TIMEOUTS = Timeouts(connect=2.0, stall=2.0, attempts=2, retry_limit=5.0)

# S3 URI options the S3FileSystem constructor cannot take; with them present, from_uri's
# filesystem is kept unchanged (the SDK's default timeouts apply).
_S3_URI_ONLY = ("tls_ca_dir_path", "tls_verify_certificates", "smart_defaults")


def _filesystem(location: Location, timeouts: Timeouts):
    """``(pyarrow filesystem, base path)`` for a remote location, built by ``from_uri``."""
    import pyarrow.fs as pafs

    fs, base = pafs.FileSystem.from_uri(location.uri)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location.uri).query))
    if isinstance(fs, pafs.S3FileSystem) and not any(k in query for k in _S3_URI_ONLY):
        options = fs.__reduce__()[1][0]
        options.update(connect_timeout=timeouts.connect, request_timeout=timeouts.stall,
                       retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=timeouts.attempts))
        fs = pafs.S3FileSystem(**options)
    elif isinstance(fs, pafs.GcsFileSystem) and "retry_limit_seconds" not in query:
        options = fs.__reduce__()[1][0]
        options["retry_time_limit"] = datetime.timedelta(seconds=max(1, round(timeouts.retry_limit)))
        fs = pafs.GcsFileSystem(**options)
    return fs, base.rstrip("/")


class RemoteStorage(Storage):
    """A remote location through pyarrow.fs (S3, GCS, HDFS, Azure)."""

    def __init__(self, location: Location | str, timeouts: Timeouts = DATA_TIMEOUTS):
        self.location = parse_location(location)
        if self.location.kind != "remote":
            raise StorageError(f"{self.location.uri} is not a remote location")
        try:
            self.fs, self.base = _filesystem(self.location, timeouts)
        except Exception as exc:
            raise StorageError(_explain(self.location, exc, "opening")) from exc
        # HDFS shows a file while it is written: write elsewhere, then rename into place.
        self._rename_into_place = self.location.scheme in ("hdfs", "viewfs")

    def __repr__(self) -> str:
        return f"RemoteStorage({self.location.uri!r})"

    def _path(self, path: str, allow_empty: bool = False) -> str:
        rel = clean_rel(path, allow_empty)
        return f"{self.base}/{rel}" if rel else self.base

    def _fail(self, op: str, path: str, exc: BaseException) -> StorageError:
        if isinstance(exc, StorageError):
            return exc
        cls = StorageNotFound if isinstance(exc, FileNotFoundError) else StorageError
        where = self.location.join(path).uri if path else self.location.uri
        return cls(f"{op} {where} failed: {exc.__class__.__name__}: {_first_lines(exc)}")

    def _write(self, path: str, src: BinaryIO, length: int) -> None:
        full = self._path(path)
        target = full
        if self._rename_into_place:
            parent = posixpath.dirname(full)
            self.fs.create_dir(parent, recursive=True)
            target = f"{parent}/{TMP_PREFIX}{secrets.token_hex(6)}-{posixpath.basename(full)}"
        out = self.fs.open_output_stream(target)
        written = 0
        try:
            while written < length:
                data = src.read(min(_CHUNK, length - written))
                if not data:
                    raise StorageError(f"the data ended after {written} of {length} bytes")
                out.write(data)
                written += len(data)
            out.close()
        except BaseException:
            # Closing, which pyarrow also does from the stream's destructor, completes an object
            # store upload: delete the truncated object rather than leave it under its name.
            try:
                out.close()
            except Exception:
                pass
            try:
                self.fs.delete_file(target)
            except Exception:
                pass
            raise
        if self._rename_into_place:
            try:
                self.fs.delete_file(full)      # HDFS rename does not replace an existing file
            except FileNotFoundError:
                pass
            self.fs.move(target, full)

    def put_file(self, local_path: str, path: str) -> None:
        try:
            with open(local_path, "rb") as src:
                self._write(path, src, os.fstat(src.fileno()).st_size)
        except Exception as exc:
            raise self._fail(f"storing {local_path} as", path, exc) from exc

    def get_file(self, path: str, local_path: str) -> None:
        try:
            with self.fs.open_input_stream(self._path(path)) as src:
                write_atomic(local_path, src, chunk=_CHUNK)
        except Exception as exc:
            raise self._fail("fetching", path, exc) from exc

    def read_bytes(self, path: str) -> bytes:
        try:
            with self.fs.open_input_stream(self._path(path)) as src:
                return src.read()
        except Exception as exc:
            raise self._fail("reading", path, exc) from exc

    def write_bytes(self, path: str, data: bytes) -> None:
        try:
            self._write(path, io.BytesIO(data), len(data))
        except Exception as exc:
            raise self._fail("writing", path, exc) from exc

    def append_file(self, local_path: str, path: str, offset: int = 0) -> int:
        # Object stores cannot append: the whole file is stored again (a PUT replaces an object
        # whole, so a reader sees the previous copy or this one). Nothing new, nothing to send.
        try:
            size = os.stat(local_path).st_size
        except OSError as exc:
            raise self._fail(f"appending {local_path} to", path, exc) from exc
        if size == offset and offset > 0:
            return offset
        try:
            with open(local_path, "rb") as src:
                self._write(path, src, size)
        except Exception as exc:
            raise self._fail(f"appending {local_path} to", path, exc) from exc
        return size

    def list(self, prefix: str = "") -> dict[str, int]:
        import pyarrow.fs as pafs

        full = self._path(prefix, allow_empty=True)
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(full, recursive=True, allow_not_found=True))
        except NotADirectoryError:
            infos = [self.fs.get_file_info(full)]
        except Exception as exc:
            raise self._fail("listing", prefix, exc) from exc
        cut = len(self.base) + 1 if self.base else 0
        return {info.path[cut:]: info.size for info in infos
                if info.type == pafs.FileType.File
                and not posixpath.basename(info.path).startswith(TMP_PREFIX)}

    def exists(self, path: str) -> bool:
        import pyarrow.fs as pafs

        try:
            return self.fs.get_file_info(self._path(path)).type != pafs.FileType.NotFound
        except Exception as exc:
            raise self._fail("looking up", path, exc) from exc

    def delete(self, path: str) -> None:
        try:
            self.fs.delete_file(self._path(path))
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise self._fail("deleting", path, exc) from exc

    def delete_tree(self, prefix: str = "") -> None:
        rel = clean_rel(prefix, allow_empty=True)
        try:
            if rel or "/" in self.base:
                self.fs.delete_dir(self._path(rel, allow_empty=True))
            else:                           # the location is a whole bucket: empty it, keep it
                self.fs.delete_dir_contents(self.base, missing_dir_ok=True)
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise self._fail("deleting the tree", prefix, exc) from exc


# -------------------------------------------------------------------------------- open / check

def open_storage(location: Location | str, driver=None, on_driver_host: bool = False) -> Storage:
    """A Storage for ``location``.

    ``driver`` is the :class:`elearn.storage.driverfs.DriverEndpoint` the driver published (None in the
    driver itself, or when there is no service); ``on_driver_host`` says whether this process
    runs on the driver's host, which only the caller knows (the PS coordinator does; an executor
    on another machine does not). A local location (a path on the driver's host) is opened
    directly on the driver's host, and through the driver's file service anywhere else. Shared
    and remote locations are opened directly everywhere and ignore both arguments.
    """
    loc = parse_location(location)
    if loc.kind == "remote":
        return RemoteStorage(loc)
    if loc.kind == "local" and driver is not None and not on_driver_host:
        return driver.storage_for(loc)
    return LocalStorage(loc)


def check_location(loc: Location | str, what: str = "--checkpoint-dir", timeout: float = 30.0) -> Location:
    """Check on the driver, before Spark starts, that ``loc`` can be written; returns the Location.

    Local and shared: the directory is created and a probe file written and removed. Remote: the
    filesystem is built (HDFS loads libhdfs and the JVM here), the bucket or container must exist,
    the directory is created (HDFS), and a probe object is written and deleted; each request is
    bounded (:data:`PROBE_TIMEOUTS`) and the whole check by ``timeout`` seconds. A failure raises
    StorageError naming ``what``, the location, the cause and the fix.
    """
    try:
        location = parse_location(loc)
    except StorageError as exc:
        raise StorageError(f"{what}: {exc}") from None
    if location.kind != "remote":
        try:
            _probe_local(location.path)
        except OSError as exc:
            extra = (" A file:// location must be mounted at this path on every host of the cluster."
                     if location.kind == "shared" else "")
            raise StorageError(f"{what} {location.uri}: cannot write there ({exc.__class__.__name__}: "
                               f"{exc}). Choose a directory this user can create and write.{extra}") from exc
        return location

    outcome: dict = {}

    def probe() -> None:
        try:
            fs, base = _filesystem(location, PROBE_TIMEOUTS)
            _probe_remote(location, fs, base)
        except BaseException as exc:       # handed to the waiting thread
            outcome["error"] = exc

    started = time.monotonic()
    worker = threading.Thread(target=probe, name="elearn-check-location", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise StorageError(f"{what} {location.uri}: no answer within {timeout:.0f}s. "
                           f"{_reachability_fix(location)}")
    exc = outcome.get("error")
    if exc is not None:
        raise StorageError(f"{what} {location.uri}: " + _explain(location, exc, "checking",
                                                                   time.monotonic() - started)) from exc
    return location


def _probe_local(path: str) -> None:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f"{TMP_PREFIX}probe-{secrets.token_hex(4)}")
    with open(probe, "wb") as f:
        f.write(b"ok")
    os.unlink(probe)


class _MissingBucket(Exception):
    pass


def _probe_remote(location: Location, fs, base: str) -> None:
    import pyarrow.fs as pafs

    if location.scheme in ("s3", "gs"):
        bucket = base.split("/", 1)[0]
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise _MissingBucket(bucket)
    elif location.scheme in ("hdfs", "viewfs"):
        fs.create_dir(base, recursive=True)
    # Azure: no container lookup. With credentials that fail, pyarrow 26.0.1's
    # get_file_info("<container>") lets the SDK's AuthenticationException escape as a C++
    # exception and aborts the whole process; the write below reports the same failures as errors.
    probe = f"{base}/{TMP_PREFIX}probe-{secrets.token_hex(4)}"
    with fs.open_output_stream(probe) as out:
        out.write(b"ok")
    fs.delete_file(probe)


# --------------------------------------------------------------------------------- messages

def _first_lines(exc: BaseException, limit: int = 3, chars: int = 400) -> str:
    # pyarrow's libhdfs/libjvm errors list ~90 dlopen attempts, the GCS client repeats its
    # message inside its metadata: the start says what matters.
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    more = f" (... {len(lines) - limit} more lines)" if len(lines) > limit else ""
    text = " / ".join(lines[:limit])
    return (text[:chars] + " ..." if len(text) > chars else text) + more


def _endpoint_env() -> tuple[str, str] | None:
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(name):
            return name, os.environ[name]
    return None


def _reachability_fix(location: Location) -> str:
    scheme = location.scheme
    if scheme == "s3":
        env = _endpoint_env()
        if env:
            return (f"Nothing answers at the S3 endpoint {env[0]}={env[1]}: check that the address "
                    f"and port are right, that the server runs, and that this host can reach it; "
                    f"unset {env[0]} to use AWS itself.")
        return ("AWS S3 could not be reached from this host. For an S3-compatible store (MinIO, "
                "Ceph, ...) set AWS_ENDPOINT_URL=http(s)://host:port; for AWS check the network "
                "path (proxy, VPC endpoint) and the region (AWS_REGION or ?region= in the URI).")
    if scheme == "gs":
        return ("Google Cloud Storage could not be reached, or no credentials were found: set "
                "GOOGLE_APPLICATION_CREDENTIALS to a service account key file, run `gcloud auth "
                "application-default login`, or run on a GCP instance with a service account; for an "
                "emulator add ?scheme=http&endpoint_override=host:port to the URI.")
    if scheme in ("abfs", "abfss"):
        return ("Azure storage could not be reached: check the account name in the URI "
                "(abfss://container@account.dfs.core.windows.net/path) and the network path; for "
                "Azurite use abfs://account@host:port/container/path?enable_tls=false.")
    return ("The HDFS NameNode did not answer: check the host and port in the URI (or fs.defaultFS "
            "in the Hadoop configuration on CLASSPATH for hdfs:///path) and that this host can reach it.")


def _credentials_fix(scheme: str) -> str:
    if scheme == "s3":
        return ("Provide credentials the standard way: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(and AWS_SESSION_TOKEN) in the environment, AWS_PROFILE with ~/.aws/credentials or "
                "~/.aws/config, or an instance / pod role; the identity needs to list, read, write "
                "and delete under this prefix.")
    if scheme == "gs":
        return ("Provide credentials: GOOGLE_APPLICATION_CREDENTIALS=/path/key.json, `gcloud auth "
                "application-default login`, or a GCP instance service account with "
                "Storage Object Admin on the bucket.")
    if scheme in ("abfs", "abfss"):
        return ("Provide credentials for DefaultAzureCredential: AZURE_CLIENT_ID, AZURE_TENANT_ID and "
                "AZURE_CLIENT_SECRET in the environment, a managed identity, workload identity, or "
                "`az login`; the identity needs the Storage Blob Data Contributor role.")
    return ("Check the HDFS permissions of this user on the directory (HADOOP_USER_NAME, or a "
            "Kerberos ticket from kinit on a secure cluster).")


def _explain(location: Location, exc: BaseException, op: str, elapsed: float | None = None) -> str:
    """Turn a pyarrow failure into problem + fix; never includes credentials (none are in URIs)."""
    scheme = location.scheme
    cause = f"{exc.__class__.__name__}: {_first_lines(exc)}"
    took = f" (after {elapsed:.1f}s)" if elapsed is not None else ""
    text = str(exc)
    low = text.lower()
    if isinstance(exc, _MissingBucket):
        kind = "container" if scheme in ("abfs", "abfss") else "bucket"
        return (f"the {kind} {str(exc)!r} does not exist (or this identity cannot see it). Create it "
                f"first (elearn never creates buckets) or fix the URI.")
    if scheme in ("hdfs", "viewfs") and ("libhdfs" in low or "libjvm" in low or "jni" in low):
        cause = f"{exc.__class__.__name__}: {_first_lines(exc, 1)}"   # then ~90 dlopen attempts
        return (f"pyarrow cannot load Hadoop's native client here ({cause}). Install Hadoop on every "
                f"host (driver and executors) and point pyarrow at it: HADOOP_HOME (libhdfs.so under "
                f"$HADOOP_HOME/lib/native) or ARROW_LIBHDFS_DIR (the directory holding libhdfs.so), "
                f"JAVA_HOME to a JDK (libjvm.so), and the Hadoop classpath in CLASSPATH: "
                f"export CLASSPATH=$(hadoop classpath --glob).")
    if "bucket" in low and ("not found" in low or "nosuchbucket" in low or "does not exist" in low):
        return f"the bucket does not exist ({cause}). Create it first (elearn never creates buckets) or fix the URI."
    if "containernotfound" in low or ("container" in low and "not found" in low):
        return f"the container does not exist ({cause}). Create it first or fix the URI."
    if scheme in ("abfs", "abfss") and "failed to get token" in low:
        return f"no Azure credentials could be obtained{took} ({cause}). {_credentials_fix(scheme)}"
    if scheme == "gs" and ("oauth2" in low or "access token" in low):
        # The GCS client reports "no token" both for missing credentials and an unreachable
        # metadata server; either way the fix is to provide credentials.
        return f"no Google Cloud credentials could be obtained{took} ({cause}). {_credentials_fix(scheme)}"
    credential_words = ("accessdenied", "access denied", "access_denied", "forbidden",
                        "invalidaccesskeyid", "signaturedoesnotmatch", "credential", "authentication",
                        "unauthenticated", "permission_denied", "permission denied", "http 403",
                        "status code: 403", "expiredtoken")
    network_words = ("network_connection", "curlcode", "could not resolve", "timeout", "timed out",
                     "unavailable", "connection refused", "could not connect", "failed to connect",
                     "couldn't connect", "connect failed", "unreachable")
    if any(w in low for w in credential_words):
        return f"access was refused{took} ({cause}). {_credentials_fix(scheme)}"
    if any(w in low for w in network_words):
        return f"{op} failed{took}: the storage service could not be reached ({cause}). {_reachability_fix(location)}"
    return f"{op} failed{took} ({cause})."
