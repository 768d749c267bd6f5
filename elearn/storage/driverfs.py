"""The driver's file service: how a node on another host writes to and reads from the driver's disk.

The default location of checkpoints, the exported model, TensorBoard events and node logs is a
plain directory on the driver's host (``~/.elearn/apps/<app>/...``). Executors run on other hosts
and cannot see it, and on a real cluster that is where writes failed (a parameter server's
``SaveV2`` into a driver path: "No such file or directory"). So the driver process serves its
directories over HTTP, and nodes reach a local location through :class:`DriverFilesStorage`, a
:class:`elearn.storage.stores.Storage` like any other, so callers never ask which one they have.

Both halves of the protocol live here. The server is the standard library's
``ThreadingHTTPServer`` (one daemon thread per connection, nothing to install, quiet): the traffic
is a handful of nodes storing checkpoints and appending logs, not a web service. Requests
(``/v1/<op>/<root>/<path>``, every component percent-encoded):

    GET    /v1/file/R/P        the file, streamed                       200 | 404
    HEAD   /v1/file/R/P        exists (file or directory), size header  200 | 404
    PUT    /v1/file/R/P        store the body (temporary file, rename)  201 {"size": n}
    POST   /v1/append/R/P      append the body; with X-Elearn-Offset only if the file has exactly
                               that size                                200 {"size": n} | 409 {"size": n}
    GET    /v1/list/R/P        files below P, recursively               200 {"path": size, ...}
    DELETE /v1/file/R/P        delete a file (missing is fine)          200
    DELETE /v1/tree/R/P        delete a tree (P empty: the root's contents) 200

Every request carries the application's token in ``X-Elearn-Token`` (compared in constant time;
missing or wrong: 403). ``R`` must be one of the served roots; ``P`` may not contain ``..``, empty
components or NUL, and what it resolves to (symlinks followed) must stay inside the root (403).
Bodies stream through 1 MiB chunks on both sides; the client keeps one connection per thread
(HTTP/1.1 keep-alive), puts a timeout on every socket operation, retries a request whose
connection failed (every request is idempotent: an append carries the offset it expects, and a
retried append that had already landed is recognised by the size the server reports), and says
which address it could not reach.
"""
from __future__ import annotations

import hmac
import http.client
import http.server
import json
import os
import secrets
import shutil
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

from elearn.errors import StorageError, StorageNotFound
from elearn.storage.localfiles import LimitedReader, append_local, delete_tree_local, list_local, write_atomic
from elearn.storage.locations import Location, clean_rel, parse_location
from elearn.storage.stores import Storage

__all__ = ["DriverFiles", "DriverEndpoint", "DriverFilesStorage", "new_token", "TOKEN_HEADER"]

TOKEN_HEADER = "X-Elearn-Token"
OFFSET_HEADER = "X-Elearn-Offset"
SIZE_HEADER = "X-Elearn-Size"
ERROR_HEADER = "X-Elearn-Error"
_CHUNK = 1 << 20


def new_token() -> str:
    """A fresh random token (256 bits) for one application's file service."""
    return secrets.token_urlsafe(32)


# ------------------------------------------------------------------------------------- server

class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"        # keep-alive: one connection per client thread
    server_version = "elearn-files/1"
    timeout = 120                        # a client silent this long loses its connection thread

    def log_message(self, format, *args):    # noqa: A002 - the stdlib's name
        pass                                 # quiet: the driver's console is the user's

    def do_GET(self):
        self._serve("GET")

    def do_HEAD(self):
        self._serve("HEAD")

    def do_PUT(self):
        self._serve("PUT")

    def do_POST(self):
        self._serve("POST")

    def do_DELETE(self):
        self._serve("DELETE")

    # -- plumbing
    def _reply(self, status: int, payload=None, close: bool = False) -> None:
        body = json.dumps(payload if payload is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if payload and "error" in payload:    # also for HEAD, which has no body
            self.send_header(ERROR_HEADER, str(payload["error"]).encode("ascii", "replace").decode()[:300])
        if close:
            # The request body was not read: the connection cannot carry another request.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _body_length(self) -> int:
        text = self.headers.get("Content-Length")
        if text is None:
            if self.command in ("PUT", "POST"):
                raise _Refused(411, "Content-Length is required")
            return 0
        try:
            length = int(text)
        except ValueError:
            raise _Refused(400, f"bad Content-Length {text!r}") from None
        if length < 0:
            raise _Refused(400, f"bad Content-Length {text!r}")
        return length

    def _serve(self, method: str) -> None:
        files: DriverFiles = self.server.files     # type: ignore[attr-defined]
        body_pending = True
        try:
            length = self._body_length()
            body_pending = length > 0
            token = self.headers.get(TOKEN_HEADER, "")
            if not hmac.compare_digest(token.encode(), files._token.encode()):
                raise _Refused(403, "missing or wrong token")
            op, root, rel, path = files._resolve(self.path, method)
            if method == "GET" and op == "file":
                self._send_file(path)
            elif method == "HEAD" and op == "file":
                if not os.path.exists(path):
                    raise _Refused(404, f"{rel} not found")
                self.send_response(200)
                size = os.path.getsize(path) if os.path.isfile(path) else 0
                self.send_header(SIZE_HEADER, str(size))
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif method == "PUT" and op == "file":
                if os.path.isdir(path):
                    raise _Refused(409, f"{rel} is a directory")
                body_pending = False
                try:
                    size = write_atomic(path, self.rfile, length)
                except StorageError:
                    # The client went away mid-body: nothing was stored, the connection is done.
                    self.close_connection = True
                    return
                self._reply(201, {"size": size})
            elif method == "POST" and op == "append":
                self._append(path, length)
                body_pending = False
            elif method == "GET" and op == "list":
                self._reply(200, list_local(files._real[root], rel))
            elif method == "DELETE" and op == "file":
                if os.path.isdir(path) and not os.path.islink(path):
                    raise _Refused(409, f"{rel} is a directory; delete it as a tree")
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                self._reply(200)
            elif method == "DELETE" and op == "tree":
                delete_tree_local(path, keep_root=not rel)
                self._reply(200)
            else:
                raise _Refused(405, f"{method} is not allowed on /v1/{op}/")
        except _Refused as exc:
            self._reply(exc.status, {"error": str(exc)}, close=body_pending)
        except (ConnectionError, socket.timeout):
            self.close_connection = True
        except Exception as exc:
            # A body may be half read: never reuse the connection after a failed upload.
            self._reply(500, {"error": f"{exc.__class__.__name__}: {exc}"},
                        close=body_pending or method in ("PUT", "POST"))

    def _send_file(self, path: str) -> None:
        try:
            f = open(path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise _Refused(404, "not found") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            # Send exactly the size announced, even if the file grows meanwhile (a live log).
            shutil.copyfileobj(LimitedReader(f, size), self.wfile, _CHUNK)

    def _append(self, path: str, length: int) -> None:
        files: DriverFiles = self.server.files     # type: ignore[attr-defined]
        text = self.headers.get(OFFSET_HEADER)
        try:
            offset = int(text) if text is not None else None
        except ValueError:
            raise _Refused(400, f"bad {OFFSET_HEADER} {text!r}") from None
        with files._append_lock:     # appends to one file must not interleave
            try:
                appended, size = append_local(path, self.rfile, length, offset)
            except StorageError:
                self.close_connection = True
                return
        if appended:
            self._reply(200, {"size": size})
        else:
            self._reply(409, {"size": size, "error": f"the file has {size} bytes, not {offset}"},
                        close=length > 0)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, *args, **kwargs):
        self.open_connections: set = set()
        self.connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def get_request(self):
        conn, addr = super().get_request()
        with self.connections_lock:
            self.open_connections.add(conn)
        return conn, addr

    def shutdown_request(self, request):
        with self.connections_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End every kept-alive connection: after stop() no request may be served."""
        with self.connections_lock:
            conns, self.open_connections = list(self.open_connections), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):
        pass     # a client that vanished mid-request is not the driver's problem; stay quiet


class DriverFiles:
    """An authenticated file service over local directories, run by the driver.

    ``roots`` maps short names ("app", "checkpoints", "model", ...) to local directories (created if
    missing); ``token`` must accompany every request. ``start()`` binds ``host:port`` (port 0: a
    free one) and serves from a daemon thread; ``stop()`` closes it. Use :meth:`endpoint` for what
    nodes need to reach it.
    """

    def __init__(self, roots: dict[str, str], token: str, host: str = "0.0.0.0", port: int = 0):
        if not token:
            raise StorageError("the driver's file service needs a token (elearn.storage.driverfs.new_token())")
        for name in roots:
            if not name or "/" in name or name in (".", ".."):
                raise StorageError(f"bad root name {name!r} for the driver's file service")
        self._roots = {name: os.path.abspath(os.path.expanduser(d)) for name, d in roots.items()}
        self._real = {}
        self._token = token
        self._host, self._port = host, port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._append_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DriverFiles({self.address if self._server else 'not started'}, roots={sorted(self._roots)})"

    @property
    def address(self) -> str:
        """``host:port`` the service listens on (the bound host; 0.0.0.0 means every interface)."""
        if self._server is None:
            raise StorageError("the driver's file service is not started")
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def start(self) -> "DriverFiles":
        for name, d in self._roots.items():
            os.makedirs(d, exist_ok=True)
            self._real[name] = os.path.realpath(d)
        try:
            self._server = _Server((self._host, self._port), _Handler)
        except OSError as exc:
            raise StorageError(f"the driver's file service cannot listen on {self._host}:{self._port}: "
                               f"{exc}. Choose another port, or 0 for a free one") from exc
        self._server.files = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="elearn-driver-files", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
            self._thread.join(10)
            self._server = self._thread = None

    def __enter__(self) -> "DriverFiles":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def endpoint(self, advertise_host: str) -> "DriverEndpoint":
        """What nodes need: ``advertise_host`` (an address of this host they can reach, e.g.
        ``spark.driver.host``), the port, the token and the roots."""
        return DriverEndpoint(f"{advertise_host}:{self.port}", self._token,
                              tuple(sorted(self._roots.items())))

    def _resolve(self, raw_path: str, method: str = "GET") -> tuple[str, str, str, str]:
        """``(op, root, relative path, real local path)`` of a request path, or _Refused."""
        path = urllib.parse.urlsplit(raw_path).path
        parts = path.split("/")
        if len(parts) < 4 or parts[0] != "" or parts[1] != "v1":
            raise _Refused(404, "expected /v1/<op>/<root>/<path>")
        op, root = parts[2], urllib.parse.unquote(parts[3])
        if op not in ("file", "append", "list", "tree"):
            raise _Refused(404, f"unknown operation {op!r}")
        if root not in self._roots:
            raise _Refused(404, f"unknown root {root!r}")
        comps = [urllib.parse.unquote(p) for p in parts[4:]]
        if comps and comps[-1] == "" and op in ("list", "tree"):
            comps = comps[:-1]                  # a trailing slash on a directory
        for c in comps:
            if c in ("", ".", "..") or "/" in c or "\\" in c or "\0" in c:
                raise _Refused(403, "path components may not be empty, '.', '..' or contain separators")
        if op in ("file", "append") and not comps and method != "HEAD":   # HEAD of a root: alive?
            raise _Refused(400, "a file path is required")
        real_root = self._real[root]
        target = os.path.realpath(os.path.join(real_root, *comps))
        if target != real_root and not target.startswith(real_root + os.sep):
            raise _Refused(403, "the path leaves the served directory")
        return op, root, "/".join(comps), target


# ------------------------------------------------------------------------------------- client

@dataclass(frozen=True)
class DriverEndpoint:
    """What the driver publishes to nodes so they can reach its file service.

    ``roots`` pairs each served name with its directory on the driver's host: a node maps a local
    location (a driver path) to the root that contains it. The token never appears in ``repr``.
    """

    address: str
    token: str = field(repr=False)
    roots: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> str:
        return json.dumps({"address": self.address, "token": self.token, "roots": dict(self.roots)})

    @classmethod
    def from_json(cls, text: str | bytes) -> "DriverEndpoint":
        d = json.loads(text)
        return cls(d["address"], d["token"], tuple(sorted(d["roots"].items())))

    def storage_for(self, location: Location | str, timeout: float = 60.0) -> "DriverFilesStorage":
        """A client for a local location (a path on the driver's host) under one of the roots."""
        loc = parse_location(location)
        if loc.kind != "local":
            raise StorageError(f"{loc.uri} is not a path on the driver's host")
        best = None
        for name, root in self.roots:
            if loc.path == root or loc.path.startswith(root.rstrip("/") + "/"):
                if best is None or len(root) > len(best[1]):
                    best = (name, root)
        if best is None:
            raise StorageError(
                f"{loc.uri} is on the driver's host but outside what its file service serves "
                f"({', '.join(r for _, r in self.roots) or 'nothing'}); nodes on other hosts cannot reach "
                f"it. Put it under one of those directories, or use a shared (file://) or remote location")
        name, root = best
        rel = os.path.relpath(loc.path, root).replace(os.sep, "/")
        return DriverFilesStorage(self.address, self.token, name, "" if rel == "." else rel,
                                  location=loc, timeout=timeout)


class _Unreachable(Exception):
    pass


class DriverFilesStorage(Storage):
    """A :class:`elearn.storage.stores.Storage` backed by the driver's file service.

    ``root`` is the served name, ``prefix`` a directory below it that this storage's paths are
    relative to. ``timeout`` bounds every socket operation (connect, each read and write), so a
    transfer of any length proceeds while bytes flow and fails after ``timeout`` of silence.
    """

    def __init__(self, address: str, token: str, root: str, prefix: str = "", *,
                 location: Location | None = None, timeout: float = 60.0, attempts: int = 3):
        self.address, self._token, self.root = address, token, root
        self.prefix = clean_rel(prefix, allow_empty=True)
        self.timeout, self.attempts = timeout, attempts
        # Built from (address, token, root) alone, the storage only knows where it is served from.
        self.location = location or Location(f"driver://{address}/{root}/{self.prefix}".rstrip("/"),
                                             "local", "driver")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise StorageError(f"bad address {address!r} for the driver's file service: expected host:port")
        self._host, self._port = host.strip("[]"), int(port)
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"DriverFilesStorage({self.address!r}, root={self.root!r}, prefix={self.prefix!r})"

    # -- HTTP
    def _url(self, op: str, path: str, allow_empty: bool = False) -> str:
        rel = clean_rel(path, allow_empty)
        full = "/".join(p for p in (self.prefix, rel) if p)
        comps = [urllib.parse.quote(self.root, safe="")] + \
                [urllib.parse.quote(c, safe="") for c in full.split("/") if c]
        return f"/v1/{op}/" + "/".join(comps)

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout,
                                              blocksize=_CHUNK)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        self._drop_connection()

    def _request(self, method: str, url: str, body=None, length: int | None = None,
                 headers: dict | None = None, reopen=None, read_body: bool = True):
        """``(status, headers, data or response)``; the response itself when ``read_body`` is False
        (the caller reads it and must read it to the end). ``reopen()`` gives a fresh body for a
        retry when ``body`` is a stream."""
        hdrs = {TOKEN_HEADER: self._token, **(headers or {})}
        if body is not None or method in ("PUT", "POST"):
            hdrs["Content-Length"] = str(length if length is not None else len(body or b""))
        last: Exception | None = None
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(0.2 * 2 ** (attempt - 1))       # backoff between retries, not a wait
                if reopen is not None:
                    body = reopen()
            conn = self._connection()
            try:
                conn.request(method, url, body=body, headers=hdrs)
                resp = conn.getresponse()
                if not read_body and resp.status == 200:
                    return resp.status, resp.headers, resp
                data = resp.read()
                if resp.will_close:
                    self._drop_connection()
                return resp.status, resp.headers, data
            except (ConnectionError, http.client.HTTPException, socket.timeout, OSError) as exc:
                # A stale keep-alive connection, a driver restarting its service, a lost packet.
                self._drop_connection()
                last = exc
        raise _Unreachable(f"{last.__class__.__name__}: {last}")

    def _fail(self, op: str, path: str, exc: BaseException | None = None, status: int | None = None,
              data: bytes = b"") -> StorageError:
        where = f"{self.root}:{'/'.join(p for p in (self.prefix, path) if p)}"
        if isinstance(exc, _Unreachable) and (answer := self._diagnose()) is not None:
            # The service answers a body-less request: it refused this one before reading its body
            # (a wrong token, an unknown root) and closed the connection while the body was sent.
            status, data = answer
            if status not in (200, 404):
                return self._fail(op, path, status=status, data=data)
            return StorageError(f"{op} {where} via the driver's file service at {self.address}: the "
                                f"connection broke during the request ({exc}); the service itself answers")
        if isinstance(exc, _Unreachable):
            return StorageError(
                f"{op} {where}: the driver's file service at {self.address} is unreachable from this "
                f"host ({socket.gethostname()}): {exc}. Check that the driver is still running and that "
                f"executors can reach that address (firewalls between executors and the driver; the "
                f"driver's address as executors see it, spark.driver.host)")
        if exc is not None:
            return StorageError(f"{op} {where} via the driver's file service at {self.address} failed: "
                                f"{exc.__class__.__name__}: {exc}")
        try:
            detail = json.loads(data).get("error", "")
        except (ValueError, AttributeError):
            detail = data[:200].decode(errors="replace")
        cls = StorageNotFound if status == 404 else StorageError
        hint = " (the token does not match this application's driver)" if status == 403 and \
            "token" in detail else ""
        return cls(f"{op} {where} via the driver's file service at {self.address}: HTTP {status} "
                   f"{detail}{hint}")

    def _diagnose(self) -> tuple[int, bytes] | None:
        """``(status, body)`` of one body-less request on a fresh connection, None if no answer."""
        conn = http.client.HTTPConnection(self._host, self._port, timeout=min(self.timeout, 10))
        try:
            conn.request("HEAD", self._url("file", "", allow_empty=True), headers={TOKEN_HEADER: self._token})
            resp = conn.getresponse()
            resp.read()
            return resp.status, json.dumps({"error": resp.headers.get(ERROR_HEADER, "")}).encode()
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    # -- Storage
    def put_file(self, local_path: str, path: str) -> None:
        url = self._url("file", path)
        try:
            f = open(local_path, "rb")
        except OSError as exc:
            raise self._fail(f"storing {local_path} as", path, exc) from exc
        with f:
            size = os.fstat(f.fileno()).st_size

            def body():
                f.seek(0)
                return LimitedReader(f, size)

            try:
                status, _, data = self._request("PUT", url, body(), size, reopen=body)
            except _Unreachable as exc:
                raise self._fail(f"storing {local_path} as", path, exc) from None
        if status != 201:
            raise self._fail(f"storing {local_path} as", path, status=status, data=data)

    def get_file(self, path: str, local_path: str) -> None:
        url = self._url("file", path)
        for attempt in range(self.attempts):
            try:
                status, headers, resp = self._request("GET", url, read_body=False)
            except _Unreachable as exc:
                raise self._fail("fetching", path, exc) from None
            if status != 200:
                raise self._fail("fetching", path, status=status, data=resp)
            expected = int(headers.get("Content-Length", -1))
            try:
                write_atomic(local_path, resp, expected, chunk=_CHUNK)
                return
            except (StorageError, ConnectionError, socket.timeout, http.client.HTTPException) as exc:
                self._drop_connection()           # the body was cut: fetch again from the start
                if attempt == self.attempts - 1:
                    raise self._fail("fetching", path, _Unreachable(f"{exc.__class__.__name__}: {exc}")) from None
            except OSError as exc:                # the local side: no point retrying
                self._drop_connection()
                raise self._fail(f"fetching to {local_path}:", path, exc) from exc

    def read_bytes(self, path: str) -> bytes:
        try:
            status, headers, data = self._request("GET", self._url("file", path))
        except _Unreachable as exc:
            raise self._fail("reading", path, exc) from None
        if status != 200:
            raise self._fail("reading", path, status=status, data=data)
        return data

    def write_bytes(self, path: str, data: bytes) -> None:
        try:
            status, _, reply = self._request("PUT", self._url("file", path), bytes(data), len(data))
        except _Unreachable as exc:
            raise self._fail("writing", path, exc) from None
        if status != 201:
            raise self._fail("writing", path, status=status, data=reply)

    def append_file(self, local_path: str, path: str, offset: int = 0) -> int:
        url = self._url("append", path)
        try:
            f = open(local_path, "rb")
        except OSError as exc:
            raise self._fail(f"appending {local_path} to", path, exc) from exc
        with f:
            size = os.fstat(f.fileno()).st_size
            if size > offset:
                n = size - offset

                def body():
                    f.seek(offset)
                    return LimitedReader(f, n)

                try:
                    status, _, data = self._request("POST", url, body(), n,
                                                    headers={OFFSET_HEADER: str(offset)}, reopen=body)
                except _Unreachable as exc:
                    raise self._fail(f"appending {local_path} to", path, exc) from None
                if status == 200:
                    return size
                if status != 409:
                    raise self._fail(f"appending {local_path} to", path, status=status, data=data)
                if json.loads(data).get("size") == size:
                    return size       # a retried append whose first attempt had landed
            elif size == offset and self._stored_size(path) == offset:
                return offset
        # The stored copy is not the prefix we think it is (deleted, or the local file was
        # replaced): store the whole file again.
        self.put_file(local_path, path)
        return size

    def append_bytes(self, path: str, data: bytes) -> None:
        """Append ``data`` to ``path`` whatever its size (records several writers add to, such as
        the application's events). A retried request whose first attempt landed appends twice."""
        try:
            status, _, reply = self._request("POST", self._url("append", path), data, len(data))
        except _Unreachable as exc:
            raise self._fail("appending to", path, exc) from None
        if status != 200:
            raise self._fail("appending to", path, status=status, data=reply)

    def _stored_size(self, path: str) -> int | None:
        try:
            status, headers, _ = self._request("HEAD", self._url("file", path))
        except _Unreachable as exc:
            raise self._fail("looking up", path, exc) from None
        return int(headers.get(SIZE_HEADER, 0)) if status == 200 else None

    def list(self, prefix: str = "") -> dict[str, int]:
        try:
            status, _, data = self._request("GET", self._url("list", prefix, allow_empty=True))
        except _Unreachable as exc:
            raise self._fail("listing", prefix, exc) from None
        if status != 200:
            raise self._fail("listing", prefix, status=status, data=data)
        cut = len(self.prefix) + 1 if self.prefix else 0
        return {p[cut:]: size for p, size in json.loads(data).items()}

    def exists(self, path: str) -> bool:
        return self._stored_size(path) is not None

    def delete(self, path: str) -> None:
        try:
            status, _, data = self._request("DELETE", self._url("file", path))
        except _Unreachable as exc:
            raise self._fail("deleting", path, exc) from None
        if status != 200:
            raise self._fail("deleting", path, status=status, data=data)

    def delete_tree(self, prefix: str = "") -> None:
        try:
            status, _, data = self._request("DELETE", self._url("tree", prefix, allow_empty=True))
        except _Unreachable as exc:
            raise self._fail("deleting the tree", prefix, exc) from None
        if status != 200:
            raise self._fail("deleting the tree", prefix, status=status, data=data)
