"""The embedded ZooKeeper server and client connections.

Without ``--zk`` elearn starts a real ZooKeeper from the jar that pyspark ships (3.6 with pyspark
3.5, 3.9 with 4.x: the same configuration serves both) on a free port of one address, and stops it
at exit. The application chooses the address (``elearn.cluster.hosts.listen_address``): loopback
when every node runs on this host, so that nobody on the network can read the application's
znodes, else the one address nodes on other hosts are told to use. Four-letter words are off in that build, so liveness is checked by connecting a kazoo
client, not with ``ruok``.
"""
from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
import threading
import time

from kazoo.client import KazooClient
from kazoo.handlers.threading import KazooTimeoutError

from elearn.cluster.procs import free_port, popen_child, stop_process
from elearn.errors import ClusterError

log = logging.getLogger(__name__)
# kazoo logs every refused connection while a server starts; our errors say what matters.
logging.getLogger("kazoo").setLevel(logging.ERROR)


def pyspark_jars() -> str:
    import pyspark

    return os.path.join(os.path.dirname(pyspark.__file__), "jars")


# The one ZooKeeper session timeout of every client elearn opens (driver, nodes, the feed's map
# tasks, pl_submit status): an ephemeral znode outlives its node by this much, and a client that
# cannot connect within it fails naming the address.
SESSION_TIMEOUT = 15.0


def close(client) -> None:
    """Stop and close a kazoo client, on the way out: a client already broken has nothing to say."""
    try:
        client.stop()
        client.close()
    except Exception:
        pass


def connect(hosts: str, credentials=None, timeout: float = SESSION_TIMEOUT) -> KazooClient:
    """A started kazoo client, or a ClusterError naming the address when nobody answers in time.

    ``hosts`` may end in a chroot (``h1:2181,h2:2181/team``); it is created if missing.
    ``credentials`` (``elearn.cluster.registry.Credentials``) authenticate the application.
    """
    servers, _, chroot = hosts.partition("/")
    if chroot.strip("/"):
        root = connect(servers, timeout=timeout)
        try:
            root.ensure_path("/" + chroot.strip("/"))
        finally:
            root.stop()
            root.close()
    auth_data = credentials.auth if credentials is not None else None
    client = KazooClient(hosts=hosts, timeout=timeout, auth_data=auth_data,
                         connection_retry={"max_tries": -1, "delay": 0.2, "max_delay": 2})
    try:
        client.start(timeout=timeout)
    except (KazooTimeoutError, Exception) as exc:  # kazoo raises a bare timeout here
        close(client)
        raise ClusterError(
            f"cannot reach ZooKeeper at {hosts!r} within {timeout:.0f}s ({exc.__class__.__name__}). "
            "Check --zk (host:port[,host:port][/chroot]) and that the ensemble is up, "
            "or drop --zk to use an embedded ZooKeeper."
        ) from None
    return client


class EmbeddedZooKeeper:
    """A single ZooKeeper server in a child JVM; ``with`` it or call ``stop()``.

    With ``supervise=True`` a server that dies is started again on the same port and data
    directory (its znodes survive; sessions reconnect), and ``on_restart`` is told.
    """

    def __init__(self, data_dir: str, port: int | None = None, start_timeout: float = 60.0,
                 supervise: bool = False, on_restart=None, address: str | None = None):
        self.data_dir = data_dir
        self.address = address  # None: every interface (a stand-in for an external ensemble)
        self.port = port or free_port()
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(data_dir, "zookeeper.log")
        self.supervise = supervise
        self.on_restart = on_restart
        self.restarts = 0
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._spawn_error: Exception | None = None  # why the first start failed, if it did

    @property
    def hosts(self) -> str:
        return f"{self.address or '127.0.0.1'}:{self.port}"

    def _config(self) -> str:
        """The server's configuration file. The two-argument command line (port, data directory)
        listens on every interface; only a file can name the address (``clientPortAddress``).
        tickTime is that command line's default (3 s: sessions of 6 to 60 s), and connections per
        client host are not limited, as there (every node of a local run connects from one
        address)."""
        settings = {"tickTime": 3000, "dataDir": os.path.join(self.data_dir, "data"),
                    "clientPort": self.port, "maxClientCnxns": 0}
        if self.address:
            settings["clientPortAddress"] = self.address
        path = os.path.join(self.data_dir, "zoo.cfg")
        os.makedirs(self.data_dir, exist_ok=True)
        with open(path, "w") as f:
            f.writelines(f"{k}={v}\n" for k, v in settings.items())
        return path

    def _command(self) -> list[str]:
        java = shutil.which("java") or (os.path.join(os.environ["JAVA_HOME"], "bin", "java")
                                        if os.environ.get("JAVA_HOME") else None)
        if not java:
            raise ClusterError("java not found: the embedded ZooKeeper needs Java 17 on PATH "
                               "(or JAVA_HOME), or pass --zk HOST:PORT of a running ensemble")
        jars = pyspark_jars()
        if not glob.glob(os.path.join(jars, "zookeeper-*.jar")):
            raise ClusterError(f"no zookeeper jar under {jars}; pass --zk HOST:PORT instead")
        return [java, "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-Dzookeeper.admin.enableServer=false", "-Dzookeeper.4lw.commands.whitelist=",
                "-cp", os.path.join(jars, "*"),
                "org.apache.zookeeper.server.ZooKeeperServerMain", self._config()]

    def _spawn(self) -> None:
        with open(self.log_path, "ab") as logf:
            self.proc = popen_child(self._command, stdout=logf, stderr=subprocess.STDOUT)

    def start(self) -> "EmbeddedZooKeeper":
        self._command = self._command()
        # znodes of an earlier run under the same app name are stale
        shutil.rmtree(os.path.join(self.data_dir, "data"), ignore_errors=True)
        os.makedirs(os.path.join(self.data_dir, "data"), exist_ok=True)
        # The JVM dies with the *thread* that started it (PDEATHSIG), so one long-lived thread
        # owns it: starts it, restarts it when supervising, and stops it.
        spawned = threading.Event()
        self._watcher = threading.Thread(target=self._own, args=(spawned,),
                                         name="elearn-zookeeper", daemon=True)
        self._watcher.start()
        if not spawned.wait(30) or self._spawn_error is not None:
            self.stop()
            why = repr(self._spawn_error) if self._spawn_error else "no process within 30 s"
            raise ClusterError(f"could not start the embedded ZooKeeper ({why}); "
                               "pass --zk HOST:PORT of a running ensemble instead")
        self._wait_up()
        log.info("embedded ZooKeeper up at %s", self.hosts)
        return self

    def _answers_within(self, timeout: float) -> bool:
        """Poll until the server takes a session; False if it exits, we stop, or time runs out."""
        deadline = time.monotonic() + timeout
        while not self._stopping.is_set():
            proc = self.proc
            if proc is None or proc.poll() is not None:
                return False
            try:
                connect(self.hosts, timeout=2).stop()
                return True
            except ClusterError:
                if time.monotonic() > deadline:
                    return False
        return False

    def _wait_up(self) -> None:
        if self._answers_within(self.start_timeout):
            return
        proc = self.proc
        self.stop()
        if proc is None or proc.poll() is not None:
            code = None if proc is None else proc.returncode
            raise ClusterError(f"embedded ZooKeeper exited ({code}); see {self.log_path}")
        raise ClusterError(f"embedded ZooKeeper did not answer on {self.hosts} within "
                           f"{self.start_timeout:.0f}s; see {self.log_path}")

    def _own(self, spawned: threading.Event) -> None:
        try:
            self._spawn()
        except Exception as err:  # noqa: BLE001 - start() reports it; this thread just ends
            self._spawn_error = err
            return
        finally:
            spawned.set()
        while not self._stopping.wait(0.5):
            proc = self.proc
            if self.supervise and proc is not None and proc.poll() is not None:
                self.restarts += 1
                log.warning("embedded ZooKeeper exited with %s; restarting it", proc.returncode)
                self._spawn()
                # Report the restart once the server serves again, so "restarted" means usable;
                # one that never comes back is found dead on the next turn and spawned again.
                if self._answers_within(self.start_timeout) and self.on_restart:
                    self.on_restart(self.restarts)
        if self.proc is not None:
            stop_process(self.proc, grace=5.0)
            self.proc = None

    def stop(self) -> None:
        self._stopping.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(30)
            self._watcher = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
