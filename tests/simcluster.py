#!/usr/bin/env python3
"""A simulated multi-host cluster on one Linux machine (root only): test infrastructure.

Each host is a set of namespaces owned by one long-lived "holder" process:

* its own network namespace, wired by a ``veth`` pair to a bridge private to the cluster, with an
  address in a /24 picked at random per cluster;
* its own UTS namespace (hostname ``edge``, ``h1`` ... ``hN``) and mount namespace, in which a hosts
  file listing every host is bind-mounted over ``/etc/hosts``;
* on worker hosts, fresh tmpfs mounts over ``/tmp``, ``~/.elearn``, ``~/.cache`` and ``/dev/shm``, so
  nothing one host writes there is seen by another host or by the edge; the Spark Worker's
  directories (``WORKER_DISK``) are a directory of the host's own on the machine's disk.

The edge host (where a driver runs) keeps the machine's real ``/tmp`` and ``$HOME``: what a test
writes under its ``tmp_path`` is visible to a driver on the edge, and on no worker host.

A Spark standalone Master runs on the edge and a Worker on every worker host, real JVMs started with the
pip pyspark's own ``bin/spark-class``. See docs/simulated-cluster.md for what is and is not
simulated.

Library::

    with SimCluster(hosts=3, shared=True) as cluster:
        cluster.edge.run([python, "driver.py", cluster.master_url], timeout=300)

CLI::

    python tests/simcluster.py up --hosts 3 [--shared]     # stays up until Ctrl-C
    python tests/simcluster.py exec edge -- hostname
    python tests/simcluster.py list
    python tests/simcluster.py down                        # removes every simulated cluster
"""
from __future__ import annotations

import argparse
import atexit
import ctypes
import importlib.util
import ipaddress
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

# Every name a cluster creates carries its 4-hex-digit id behind one of these prefixes, so that
# sweep() finds the leftovers of a crashed run by name alone.
NETNS_PREFIX = "elsim-"        # network namespace  elsim-<id>-<host>
BRIDGE_PREFIX = "elsb"         # bridge             elsb<id>
VETH_PREFIX = "elsv"           # root side of veth  elsv<id><host>   (the host side is eth0)
STATE_ROOT = "/var/tmp"        # backing directory  /var/tmp/elsim-<id>
CLUSTER_ENV = "ELSIM_CLUSTER"  # set in every process the cluster starts: found by sweep()

_NETNS_RE = re.compile(r"^elsim-([0-9a-f]{4})-([a-z0-9]+)$")
_LINK_RE = re.compile(r"^els[bv]([0-9a-f]{4})")
_DIR_RE = re.compile(r"^elsim-([0-9a-f]{4})$")

MASTER_PORT = 7077
MASTER_UI_PORT = 8080
WORKER_UI_PORT = 8081
# A worker host's Spark directories, on the machine's disk (a directory of the cluster's own per
# host, mounted inside the host's private /tmp), as a real worker's are on its local disks: executors
# unpack shipped environments there (2.5 GB for a TensorFlow venv, per executor), which a tmpfs
# would hold in memory, three hosts over.
WORKER_DISK = "/tmp/spark-disk"
WORKER_DIR = WORKER_DISK + "/work"       # executors' working directories (their logs, files, archives)
WORKER_LOCAL_DIR = WORKER_DISK + "/local"  # SPARK_LOCAL_DIRS: fetched files, shuffle and block data
SPARK_LOG_DIR = "/tmp/spark-logs"

# The daemons are bookkeeping only: keep them small and quick to start on a 2-core machine.
DAEMON_JAVA_OPTS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:CICompilerCount=1"
DAEMON_MEMORY = "256m"


def spark_home() -> str:
    """The pip pyspark package directory, which is a SPARK_HOME with ``bin/spark-class``."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.origin:
        raise RuntimeError("pyspark is not installed in this interpreter")
    return os.path.dirname(spec.origin)


class SimClusterError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# small helpers


def _sh(*argv, check=True, timeout=30) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise SimClusterError(f"{' '.join(map(str, argv))} failed ({proc.returncode}): "
                              f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: tells a live owner from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True  # gone


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:200]
    except OSError:
        return "?"


def _describe(pids) -> str:
    return "; ".join(f"{p}: {_cmdline(p)}" for p in pids)


def _tail(path: str, n: int = 25) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError as e:
        return f"(no log: {e})"


def _netns_ino(name: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{name}").st_ino
    except OSError:
        return None


def _pids_in_netns(inodes: set[int]) -> list[int]:
    """Live (non-zombie) processes whose network namespace is one of ``inodes``.

    Matching by namespace catches everything a host ever ran, whatever its parentage: executors
    forked by a Worker, Python workers forked by those, TF servers forked by tasks.
    """
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            ino = os.stat(f"/proc/{entry}/ns/net").st_ino
        except OSError:
            continue
        if ino in inodes and not _is_zombie(int(entry)):
            found.append(int(entry))
    return sorted(found)


def _pids_with_env(name: str, value: str) -> list[int]:
    needle, me, found = f"{name}={value}".encode(), os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0") and not _is_zombie(int(entry)):
                    found.append(int(entry))
        except OSError:
            continue
    return sorted(found)


def _kill_until_gone(find, what: str, timeout: float = 30.0, exclude=()) -> None:
    """SIGKILL whatever ``find()`` returns until it returns nothing (a process may fork while we
    kill its parent, so one pass is not enough); fail naming the survivors after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for p in find() if p not in exclude]
        if not pids:
            return
        if time.monotonic() > deadline:
            raise SimClusterError(f"{what}: processes still alive after {timeout:.0f}s: {_describe(pids)}")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)


_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def _in_netns(netns_file: str, fn, *args, timeout: float = 60.0):
    """Run ``fn(*args)`` on a fresh thread that has joined the network namespace ``netns_file``.

    setns(CLONE_NEWNET) changes only the calling thread, and the thread ends with ``fn``, so the
    caller's own network is untouched. Sockets ``fn`` opens live in that namespace, which is how
    the harness probes a host "from inside" without starting a process for it.
    """
    result: dict = {}

    def body():
        try:
            fd = os.open(netns_file, os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns_file}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller
            result["error"] = exc

    thread = threading.Thread(target=body, name=f"netns-{os.path.basename(netns_file)}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise SimClusterError(f"a probe inside {netns_file} did not return within {timeout}s")
    if "error" in result:
        raise result["error"]
    return result["value"]


def _connect(address: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _get_json(url: str, timeout: float):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


def _used_networks() -> list:
    """Every IPv4 network the machine has an address or a route in, and every simulated
    cluster's subnet, so a new cluster's /24 collides with none of them."""
    nets = []
    for line in _sh("ip", "-4", "-o", "addr", "show").stdout.splitlines():
        m = re.search(r"inet (\S+)", line)
        if m:
            nets.append(ipaddress.ip_interface(m.group(1)).network)
    for line in _sh("ip", "-4", "route", "show", "table", "all").stdout.splitlines():
        words = line.split()
        if not words:
            continue
        dest = words[1] if words[0] in ("local", "broadcast", "unicast", "multicast", "anycast",
                                         "blackhole", "unreachable", "prohibit", "throw") else words[0]
        if dest == "default" or len(words) < 2:
            continue
        try:
            nets.append(ipaddress.ip_network(dest, strict=False))
        except ValueError:
            pass
    for entry in _list_state_dirs():
        try:
            with open(os.path.join(STATE_ROOT, entry, "state.json")) as f:
                nets.append(ipaddress.ip_network(json.load(f)["subnet"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return nets


def _pick_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    rng = random.SystemRandom()
    for _ in range(500):
        # 10.0.x.x is avoided: it is the first choice of many other tools.
        net = ipaddress.ip_network(f"10.{rng.randint(1, 254)}.{rng.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise SimClusterError("no free 10.x.y.0/24 for a simulated cluster")


def _list_state_dirs() -> list[str]:
    try:
        return [e for e in os.listdir(STATE_ROOT) if _DIR_RE.match(e)]
    except OSError:
        return []


def _list_netns() -> list[str]:
    out = _sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _list_links() -> list[str]:
    out = _sh("ip", "-o", "link", "show", check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


def _owner_alive(state: dict) -> bool:
    owner = state.get("owner") or {}
    pid = owner.get("pid")
    return bool(pid) and _proc_start_time(pid) == owner.get("start") and not _is_zombie(pid)


def _read_state(cluster_id: str) -> dict | None:
    try:
        with open(os.path.join(STATE_ROOT, f"elsim-{cluster_id}", "state.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# hosts


class SimHost:
    """One simulated host: ``name``, ``address``, ``netns``; run processes in it with
    ``popen``/``run``."""

    def __init__(self, cluster: "SimCluster", name: str, address: str, worker: bool):
        self.cluster = cluster
        self.name = name
        self.address = address
        self.is_worker = worker
        self.netns = f"{NETNS_PREFIX}{cluster.id}-{name}"
        self.veth = f"{VETH_PREFIX}{cluster.id}{name}"
        self.holder: subprocess.Popen | None = None

    def __repr__(self):
        return f"SimHost({self.name} {self.address})"

    @property
    def holder_pid(self) -> int:
        if self.holder is None:
            raise SimClusterError(f"host {self.name} is not up")
        return self.holder.pid

    @property
    def netns_file(self) -> str:
        return f"/run/netns/{self.netns}"

    # -- running things ----------------------------------------------------------------------

    def command(self, argv, cwd: str | None = None) -> list[str]:
        """The argv that runs ``argv`` inside this host's namespaces.

        nsenter execs in place (no --fork: no pid namespace is entered), so a Popen of this argv
        *is* the process. Entering the mount namespace puts the process at that namespace's
        ``/``. A working directory is then set with ``cd`` inside the host: nsenter's own
        ``--wd=DIR`` opens DIR *before* entering, so the process would sit in the machine's
        directory (``--wd=/tmp`` lands in the real /tmp, not the host's tmpfs).
        """
        argv = [str(a) for a in argv]
        base = ["nsenter", f"--target={self.holder_pid}", "--net", "--mount", "--uts", "--"]
        if cwd in (None, "/"):
            return base + argv
        return base + ["/bin/sh", "-c", 'cd -- "$0" && exec "$@"', str(cwd)] + argv

    def environment(self, env: dict | None = None) -> dict:
        """The machine's environment, then the cluster's extra ``env``, then ``env``."""
        return {**os.environ, **self.cluster.base_env, **{k: str(v) for k, v in (env or {}).items()}}

    def popen(self, argv, env: dict | None = None, cwd: str | None = None, **kwargs) -> subprocess.Popen:
        """``subprocess.Popen`` of ``argv`` inside this host. ``env`` adds to the cluster's
        environment. Each process gets its own session (Ctrl-C on a terminal reaches only the
        caller, and ``os.killpg(p.pid, ...)`` reaches the process and what it forked)."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("start_new_session", True)
        return subprocess.Popen(self.command(argv, cwd), env=self.environment(env), **kwargs)

    def run(self, argv, timeout: float = 300, env: dict | None = None, cwd: str | None = None,
            check: bool = False, input: str | None = None, capture: bool = True) -> subprocess.CompletedProcess:
        """Run ``argv`` in this host to completion (text output captured unless ``capture`` is
        false). On ``timeout`` its process group is killed and ``TimeoutExpired`` (with the output
        so far) is raised."""
        pipe = subprocess.PIPE if capture else None
        proc = self.popen(argv, env=env, cwd=cwd, stdout=pipe, stderr=pipe, text=True,
                          stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            out, err = proc.communicate()
            raise subprocess.TimeoutExpired(exc.cmd, timeout, out, err) from None
        done = subprocess.CompletedProcess(argv, proc.returncode, out, err)
        if check:
            done.check_returncode()
        return done

    def path(self, path: str) -> str:
        """A path the caller can open for ``path`` as this host sees it (its tmpfs /tmp and so on):
        ``/proc/<holder>/root`` resolves names in the holder's mount namespace."""
        return f"/proc/{self.holder_pid}/root/{path.lstrip('/')}"

    # -- network -------------------------------------------------------------------------------

    def in_net(self, fn, *args, timeout: float = 60.0):
        """Call ``fn(*args)`` in a thread inside this host's network (see ``_in_netns``)."""
        return _in_netns(self.netns_file, fn, *args, timeout=timeout)

    def can_connect(self, address: str, port: int, timeout: float = 3.0) -> bool:
        """Whether a TCP connection from this host to ``address:port`` succeeds within ``timeout``."""
        return self.in_net(_connect, address, port, timeout, timeout=timeout + 30)

    def link_down(self) -> None:
        """Unplug the host's cable: its bridge-side veth goes down. The host keeps its address and
        processes; nothing reaches it or leaves it."""
        _sh("ip", "link", "set", self.veth, "down")

    def link_up(self) -> None:
        _sh("ip", "link", "set", self.veth, "up")

    def block(self, address: str) -> None:
        """Refuse everything between this host and ``address``, as a firewall that rejects it: a
        route of type prohibit, so connecting fails at once (EACCES) both ways (replies are
        routed too). Other hosts, the edge among them, stay reachable."""
        _sh("ip", "-n", self.netns, "route", "add", "prohibit", f"{address}/32")

    def unblock(self, address: str) -> None:
        _sh("ip", "-n", self.netns, "route", "del", "prohibit", f"{address}/32")

    # -- mounts ----------------------------------------------------------------------------------

    def hide(self, path: str) -> None:
        """Cover ``path`` with an empty directory in this host only, as a host where a share is
        not mounted sees its bare mountpoint (a fresh tmpfs in the host's mount namespace)."""
        _sh("nsenter", f"--target={self.holder_pid}", "--mount", "--", "mount", "-t", "tmpfs",
            "-o", "mode=1777", "elsim-unmounted", path)

    def unhide(self, path: str) -> None:
        _sh("nsenter", f"--target={self.holder_pid}", "--mount", "--", "umount", path)

    # -- processes -------------------------------------------------------------------------------

    @property
    def netns_inode(self) -> int:
        ino = _netns_ino(self.netns)
        if ino is None:
            raise SimClusterError(f"network namespace {self.netns} does not exist")
        return ino

    def pids(self) -> list[int]:
        """Live processes in this host (its holder included)."""
        return _pids_in_netns({self.netns_inode})

    def kill_all(self, timeout: float = 30.0) -> None:
        """SIGKILL every process of this host except its holder, and wait until they are gone."""
        _kill_until_gone(self.pids, f"kill_all on {self.name}", timeout, exclude={self.holder_pid})
        self.cluster._reap()

    def start_worker(self, wait: bool = True, timeout: float = 180.0) -> subprocess.Popen:
        """(Re)start this host's Spark Worker; with ``wait``, until the master lists it ALIVE."""
        return self.cluster._start_worker(self, wait=wait, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# the cluster


class SimCluster:
    """``hosts`` worker hosts h1..hN and an edge host; a Spark standalone Master on the edge and a Worker
    per worker host (unless ``spark=False``).

    ``env`` is added to the environment of every process started on any host (the Spark daemons,
    hence executors and what they fork, included). ``shared=True`` makes a directory visible at the
    same path on every host (``shared_dir``), standing for NFS or dbfs. ``cores``/``memory`` are
    each Worker's offer. ``daemon_conf`` adds ``-Dkey=value`` Spark settings to Master and Workers
    (e.g. ``{"spark.worker.timeout": "10"}``).

    The interpreter's environment and this project's checkout stand for software installed alike on
    every host (an image): when they live below a path the worker hosts mask (a checkout in /tmp, as
    a CI job may make), they stay visible there at the same path.
    """

    def __init__(self, hosts: int = 3, shared: bool = False, cores: int = 2, memory: str = "3g",
                 env: dict | None = None, python: str | None = None, spark: bool = True,
                 daemon_conf: dict | None = None, start_timeout: float = 180.0):
        if not 1 <= hosts <= 99:
            raise ValueError("hosts must be 1..99")
        self.n_hosts = hosts
        self.shared = shared
        self.cores = cores
        self.memory = memory
        self.extra_env = {k: str(v) for k, v in (env or {}).items()}
        self.python = python or sys.executable
        self.spark = spark
        self.daemon_conf = dict(daemon_conf or {})
        self.start_timeout = start_timeout
        self.id = self._new_id()
        self.dir = os.path.join(STATE_ROOT, f"elsim-{self.id}")
        self.bridge = f"{BRIDGE_PREFIX}{self.id}"
        self.subnet: ipaddress.IPv4Network | None = None
        self.edge: SimHost | None = None
        self.hosts: list[SimHost] = []
        self._daemons: dict[tuple[str, str], subprocess.Popen] = {}
        self._started = self._closed = False
        self.bring_up_seconds = self.teardown_seconds = None

    @staticmethod
    def _new_id() -> str:
        taken = ({m.group(1) for n in _list_netns() if (m := _NETNS_RE.match(n))}
                 | {m.group(1) for n in _list_state_dirs() if (m := _DIR_RE.match(n))}
                 | {m.group(1) for n in _list_links() if (m := _LINK_RE.match(n))})
        while True:
            cid = f"{random.SystemRandom().getrandbits(16):04x}"
            if cid not in taken:
                return cid

    # -- public properties ---------------------------------------------------------------------

    @property
    def all_hosts(self) -> list[SimHost]:
        return [self.edge] + self.hosts

    def host(self, name: str) -> SimHost:
        for h in self.all_hosts:
            if h.name == name:
                return h
        raise KeyError(f"no host {name!r} in cluster {self.id} (hosts: "
                       f"{', '.join(h.name for h in self.all_hosts)})")

    @property
    def master_host(self) -> SimHost:
        # The cluster manager runs beside the driver, as on a gateway node: a worker host that
        # loses all its processes (a fault test) must not take the Master with it.
        return self.edge

    @property
    def master_url(self) -> str:
        return f"spark://{self.master_host.address}:{MASTER_PORT}"

    @property
    def master_ui_url(self) -> str:
        return f"http://{self.master_host.address}:{MASTER_UI_PORT}"

    @property
    def shared_dir(self) -> str | None:
        return os.path.join(self.dir, "shared") if self.shared else None

    @property
    def base_env(self) -> dict:
        """What every process on every host gets on top of the machine's environment."""
        return {"PYSPARK_PYTHON": self.python, **self.extra_env, CLUSTER_ENV: self.id}

    def log_path(self, host: SimHost, what: str) -> str:
        return os.path.join(self.dir, "logs", f"{host.name}-{what}.log")

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> "SimCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> "SimCluster":
        if self._started:
            return self
        self._started = True
        t0 = time.monotonic()
        atexit.register(self.close)
        try:
            self._write_state()  # first: a crash from here on leaves a dir sweep() recognises
            self.subnet = _pick_subnet()
            base = int(self.subnet.network_address)
            self.edge = SimHost(self, "edge", str(ipaddress.ip_address(base + 2)), worker=False)
            self.hosts = [SimHost(self, f"h{i}", str(ipaddress.ip_address(base + 10 + i)), worker=True)
                          for i in range(1, self.n_hosts + 1)]
            self._write_state()
            os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
            if self.shared:
                os.makedirs(self.shared_dir, exist_ok=True)
                os.chmod(self.shared_dir, 0o1777)
            self._write_hosts_file()
            self._make_network()
            for h in self.all_hosts:
                self._start_holder(h)
            self._wait_holders()
            self._write_state()
            if self.spark:
                self.start_master()
                for h in self.hosts:
                    self._start_worker(h, wait=False)
                self.wait_workers(timeout=self.start_timeout)
        except BaseException:
            self.close()
            raise
        self.bring_up_seconds = time.monotonic() - t0
        return self

    def close(self) -> None:
        """Remove everything: processes in every host (by network namespace and by the cluster's
        env marker), veths, bridge, namespaces, the backing directory. Idempotent."""
        if self._closed or not self._started:
            return
        self._closed = True
        t0 = time.monotonic()
        try:
            _teardown(self.id)
        finally:
            self._reap()
            atexit.unregister(self.close)
        self.teardown_seconds = time.monotonic() - t0

    def _reap(self) -> None:
        """Collect the exit status of the holders and daemons this object started (once they
        are killed they would stay zombies of the caller otherwise)."""
        procs = [h.holder for h in self.all_hosts if h and h.holder] + list(self._daemons.values())
        for p in procs:
            p.poll()  # reaps it if it has exited

    def _write_state(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        state = {
            "id": self.id, "dir": self.dir, "bridge": self.bridge,
            "owner": {"pid": os.getpid(), "start": _proc_start_time(os.getpid())},
            "subnet": str(self.subnet) if self.subnet else None,
            "master_url": self.master_url if self.hosts and self.spark else None,
            "shared_dir": self.shared_dir, "env": self.base_env,
            "hosts": [{"name": h.name, "address": h.address, "netns": h.netns, "veth": h.veth,
                       "holder_pid": h.holder.pid if h.holder else None}
                      for h in ([self.edge] + self.hosts if self.edge else [])],
        }
        tmp = os.path.join(self.dir, "state.json.tmp")
        with open(tmp, "w") as f:
            json.dump(state, f, indent=1)
        os.replace(tmp, os.path.join(self.dir, "state.json"))

    def _write_hosts_file(self) -> None:
        os.makedirs(os.path.join(self.dir, "etc"), exist_ok=True)
        # No 127.0.1.1 line for the host's own name: its name must resolve to the address other
        # hosts reach it at (Spark advertises what the hostname resolves to).
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines += [f"{h.address}\t{h.name}" for h in self.all_hosts]
        with open(os.path.join(self.dir, "etc", "hosts"), "w") as f:
            f.write("\n".join(lines) + "\n")

    def _make_network(self) -> None:
        # nf_call_iptables 0: on a machine whose firewall drops forwarded packets (Docker sets
        # FORWARD to DROP) bridged frames would otherwise be filtered too.
        _sh("ip", "link", "add", self.bridge, "type", "bridge", "forward_delay", "0",
            "nf_call_iptables", "0")
        _sh("ip", "link", "set", self.bridge, "up")
        prefix = self.subnet.prefixlen
        for h in self.all_hosts:
            _sh("ip", "netns", "add", h.netns)
            # The host side is created directly inside the namespace, named eth0 like a real NIC.
            _sh("ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.netns)
            _sh("ip", "link", "set", h.veth, "master", self.bridge)
            _sh("ip", "link", "set", h.veth, "up")
            _sh("ip", "-n", h.netns, "addr", "add", f"{h.address}/{prefix}", "dev", "eth0")
            _sh("ip", "-n", h.netns, "link", "set", "eth0", "up")
            _sh("ip", "-n", h.netns, "link", "set", "lo", "up")

    def _start_holder(self, h: SimHost) -> None:
        hosts_file = os.path.join(self.dir, "etc", "hosts")
        q = shlex.quote
        steps = ["set -e", f"mount --bind {q(hosts_file)} /etc/hosts"]
        if h.is_worker:
            home = os.path.expanduser("~")
            masked = ["/tmp", "/dev/shm"] + [os.path.join(home, sub) for sub in (".elearn", ".cache")]
            kept = [p for p in self._installed() if any(p == m or p.startswith(m + os.sep) for m in masked)]
            holds = [os.path.join(self.dir, "kept", str(i)) for i in range(len(kept))]
            for path, hold in zip(kept, holds):   # set aside before the masks, put back after
                os.makedirs(hold, exist_ok=True)
                steps.append(f"mount --bind {q(path)} {q(hold)}")
            steps.append("mount -t tmpfs -o mode=1777 elsim-tmp /tmp")
            steps.append("mount -t tmpfs -o mode=1777 elsim-shm /dev/shm")
            disk = os.path.join(self.dir, "disk", h.name)
            os.makedirs(disk, exist_ok=True)
            steps.append(f"mkdir -p {WORKER_DISK}")
            steps.append(f"mount --bind {q(disk)} {WORKER_DISK}")
            for sub in (".elearn", ".cache"):
                d = os.path.join(home, sub)
                os.makedirs(d, exist_ok=True)  # the mountpoint, on the machine's disk
                steps.append(f"mount -t tmpfs -o mode=0755 elsim-home {q(d)}")
            for path, hold in zip(kept, holds):
                steps.append(f"mkdir -p {q(path)}")
                steps.append(f"mount --move {q(hold)} {q(path)}")
        steps += [f"hostname {q(h.name)}", "exec sleep infinity"]
        log = open(self.log_path(h, "holder"), "wb")
        # ip netns exec: joins the netns, makes a mount namespace with /sys for that netns, execs.
        # unshare (no --fork) execs too, so this Popen's pid ends up being `sleep`: the holder.
        # --propagation private: the host's mounts stay inside it and the machine's later mounts
        # stay out. The copies of /run/netns/* it starts with do not keep other clusters'
        # namespaces alive: `ip netns del` unlinks the file, which detaches every copy of a mount
        # on it in other mount namespaces (Linux >= 3.18).
        h.holder = subprocess.Popen(
            ["ip", "netns", "exec", h.netns, "unshare", "--mount", "--uts", "--propagation", "private",
             "--", "/bin/sh", "-c", "; ".join(steps)],
            cwd="/", env=h.environment(), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def _installed(self) -> list[str]:
        """The interpreter's environment and this project's checkout: software on every host."""
        prefix = os.path.dirname(os.path.dirname(os.path.abspath(self.python)))
        project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return sorted({prefix, project})

    def _wait_holders(self, timeout: float = 30.0) -> None:
        """A holder is ready once it is `sleep` (its mounts and hostname are done by then)."""
        deadline = time.monotonic() + timeout
        pending = list(self.all_hosts)
        while pending:
            for h in list(pending):
                if h.holder.poll() is not None:
                    raise SimClusterError(f"host {h.name}: namespace holder exited "
                                          f"({h.holder.returncode}): {_tail(self.log_path(h, 'holder'))}")
                if _cmdline(h.holder.pid) == "sleep infinity":
                    pending.remove(h)
            if pending and time.monotonic() > deadline:
                raise SimClusterError(f"namespace holders not ready after {timeout:.0f}s: "
                                      f"{', '.join(h.name for h in pending)}")
            if pending:
                time.sleep(0.02)

    # -- Spark standalone -------------------------------------------------------------------------

    def _spark_env(self, h: SimHost) -> dict:
        opts = DAEMON_JAVA_OPTS + "".join(f" -D{k}={v}" for k, v in self.daemon_conf.items())
        env = {"SPARK_HOME": spark_home(), "SPARK_LOCAL_IP": h.address, "SPARK_LOG_DIR": SPARK_LOG_DIR,
               "SPARK_DAEMON_MEMORY": DAEMON_MEMORY, "SPARK_DAEMON_JAVA_OPTS": opts}
        if h.is_worker:
            env["SPARK_LOCAL_DIRS"] = WORKER_LOCAL_DIR
        return env

    def _spawn_daemon(self, h: SimHost, kind: str, argv: list[str]) -> subprocess.Popen:
        old = self._daemons.pop((h.name, kind), None)
        if old is not None and old.poll() is None:
            self._daemons[(h.name, kind)] = old
            raise SimClusterError(f"a Spark {kind} is already running on {h.name} (pid {old.pid})")
        log = open(self.log_path(h, kind), "ab")
        spark_class = os.path.join(spark_home(), "bin", "spark-class")
        proc = h.popen([spark_class] + argv, env=self._spark_env(h), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._daemons[(h.name, kind)] = proc
        return proc

    def start_master(self, timeout: float | None = None) -> None:
        """(Re)start the Master on the edge and wait until its JSON answers."""
        h = self.master_host
        self._spawn_daemon(h, "master", ["org.apache.spark.deploy.master.Master", "--host", h.address,
                                         "--port", str(MASTER_PORT), "--webui-port", str(MASTER_UI_PORT)])
        timeout = timeout or self.start_timeout
        deadline = time.monotonic() + timeout
        while True:
            self._check_daemon(h, "master")
            try:
                if self.master_json(timeout=2).get("status") == "ALIVE":
                    return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise SimClusterError(f"Spark master on {h.name} ({self.master_ui_url}/json/) not ALIVE "
                                      f"after {timeout:.0f}s; log:\n{_tail(self.log_path(h, 'master'))}")
            time.sleep(0.25)

    def _start_worker(self, h: SimHost, wait: bool, timeout: float = 180.0) -> subprocess.Popen:
        if not h.is_worker:
            raise SimClusterError("the edge host runs no Spark Worker")
        before = {w["id"] for w in self._workers_or_empty() if w.get("host") == h.address}
        proc = self._spawn_daemon(h, "worker", [
            "org.apache.spark.deploy.worker.Worker", "--host", h.address, "--cores", str(self.cores),
            "--memory", self.memory, "--work-dir", WORKER_DIR, "--webui-port", str(WORKER_UI_PORT),
            self.master_url])
        if wait:
            self.wait_workers([h], timeout=timeout, exclude_ids=before)
        return proc

    def _check_daemon(self, h: SimHost, kind: str) -> None:
        p = self._daemons.get((h.name, kind))
        if p is not None and p.poll() is not None:
            raise SimClusterError(f"Spark {kind} on {h.name} exited ({p.returncode}); log:\n"
                                  f"{_tail(self.log_path(h, kind))}")

    def master_json(self, timeout: float = 5.0) -> dict:
        """The master's ``/json/`` as fetched from inside the edge host."""
        return self.edge.in_net(_get_json, f"{self.master_ui_url}/json/", timeout, timeout=timeout + 30)

    def _workers_or_empty(self) -> list[dict]:
        try:
            return self.master_json(timeout=2).get("workers", [])
        except (OSError, ValueError):
            return []

    def alive_workers(self) -> list[dict]:
        """The master's ALIVE workers (dicts with ``host``, ``port``, ``id``, ``cores`` ...)."""
        return [w for w in self.master_json().get("workers", []) if w.get("state") == "ALIVE"]

    def wait_workers(self, hosts: list[SimHost] | None = None, timeout: float = 180.0,
                     exclude_ids=()) -> None:
        """Wait until each of ``hosts`` (default: all worker hosts) has an ALIVE Worker on the
        master (one whose id is not in ``exclude_ids``: a restarted Worker, not the dead one)."""
        hosts = hosts or self.hosts
        deadline = time.monotonic() + timeout
        while True:
            for h in hosts:
                self._check_daemon(h, "worker")
            self._check_daemon(self.master_host, "master")
            alive = {w["host"] for w in self._workers_or_empty()
                     if w.get("state") == "ALIVE" and w.get("id") not in exclude_ids}
            missing = [h for h in hosts if h.address not in alive]
            if not missing:
                return
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {h.name} worker log:\n{_tail(self.log_path(h, 'worker'), 15)}"
                                 for h in missing)
                raise SimClusterError(
                    f"Spark workers not ALIVE on {self.master_url} after {timeout:.0f}s: "
                    f"{', '.join(f'{h.name} ({h.address})' for h in missing)}\n{logs}")
            time.sleep(0.25)

    def extra_pids(self, services=()) -> dict[str, list[int]]:
        """Per host, the live processes other than its holder, the cluster's Spark daemons and
        ``services`` (pids a test keeps running across applications, such as an S3 server): what
        an application left behind (executors, Python workers, TF servers, drivers)."""
        keep = {h.holder_pid for h in self.all_hosts} | set(services)
        keep |= {p.pid for p in self._daemons.values() if p.poll() is None}
        found = {h.name: [p for p in h.pids() if p not in keep] for h in self.all_hosts}
        return {name: pids for name, pids in found.items() if pids}

    def wait_quiet(self, timeout: float = 60.0, services=()) -> None:
        """Wait until no host runs anything but its holder and the Spark daemons (a standalone
        Worker stops an application's executors a moment after the application ends); fail
        naming what is still running. The check that nothing outlived an application."""
        deadline = time.monotonic() + timeout
        while True:
            extra = self.extra_pids(services)
            if not extra:
                return
            if time.monotonic() > deadline:
                raise SimClusterError(f"still running {timeout:.0f}s later: " + " | ".join(
                    f"{name}: {_describe(pids)}" for name, pids in extra.items()))
            time.sleep(0.2)

    def executor_logs(self) -> dict[str, str]:
        """Every executor's stdout/stderr on every worker host, keyed ``host:app/executor/file``
        (they live in each host's private /tmp, gone with the cluster)."""
        logs = {}
        for h in self.hosts:
            root = h.path(WORKER_DIR)
            if not os.path.isdir(root):
                continue
            for app in sorted(os.listdir(root)):
                app_dir = os.path.join(root, app)
                for ex in sorted(os.listdir(app_dir)) if os.path.isdir(app_dir) else []:
                    for name in ("stdout", "stderr"):
                        p = os.path.join(app_dir, ex, name)
                        if os.path.isfile(p):
                            with open(p, errors="replace") as f:
                                logs[f"{h.name}:{app}/{ex}/{name}"] = f.read()
        return logs

    def describe(self) -> str:
        lines = [f"simulated cluster {self.id}  subnet {self.subnet}  bridge {self.bridge}  dir {self.dir}"]
        for h in self.all_hosts:
            role = "edge (driver, Spark master)" if not h.is_worker else "Spark worker"
            lines.append(f"  {h.name:5} {h.address:15} netns {h.netns:18} holder {h.holder_pid:<8} "
                         f"{role if self.spark else ''}")
        if self.spark:
            lines.append(f"  master URL  {self.master_url}   master UI {self.master_ui_url} (from a host)")
        if self.shared:
            lines.append(f"  shared dir  {self.shared_dir}  (same path on every host)")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# teardown and sweep


def _teardown(cluster_id: str, timeout: float = 30.0) -> None:
    """Remove every trace of cluster ``cluster_id``, whatever state a crash left it in."""
    names = [n for n in _list_netns() if (m := _NETNS_RE.match(n)) and m.group(1) == cluster_id]
    inodes = {ino for n in names if (ino := _netns_ino(n)) is not None}

    def find():
        # By namespace (everything a host ran) and by env marker (a process whose namespace file
        # is already gone after a half-finished teardown).
        return sorted(set(_pids_in_netns(inodes)) | set(_pids_with_env(CLUSTER_ENV, cluster_id)))

    _kill_until_gone(find, f"teardown of simulated cluster {cluster_id}", timeout)
    errors = []
    for link in _list_links():
        if link.startswith(f"{VETH_PREFIX}{cluster_id}"):
            r = _sh("ip", "link", "del", link, check=False)
            if r.returncode and link in _list_links():
                errors.append(f"ip link del {link}: {r.stderr.strip()}")
    for n in names:
        r = _sh("ip", "netns", "del", n, check=False)
        if r.returncode:
            errors.append(f"ip netns del {n}: {r.stderr.strip()}")
    if f"{BRIDGE_PREFIX}{cluster_id}" in _list_links():
        r = _sh("ip", "link", "del", f"{BRIDGE_PREFIX}{cluster_id}", check=False)
        if r.returncode:
            errors.append(f"ip link del {BRIDGE_PREFIX}{cluster_id}: {r.stderr.strip()}")
    shutil.rmtree(os.path.join(STATE_ROOT, f"elsim-{cluster_id}"), ignore_errors=True)
    if errors:
        raise SimClusterError(f"teardown of simulated cluster {cluster_id}: " + "; ".join(errors))


def cluster_ids() -> set[str]:
    """Ids of every simulated cluster with anything left on the machine."""
    ids = {m.group(1) for n in _list_netns() if (m := _NETNS_RE.match(n))}
    ids |= {m.group(1) for n in _list_state_dirs() if (m := _DIR_RE.match(n))}
    ids |= {m.group(1) for n in _list_links() if (m := _LINK_RE.match(n))}
    return ids


def sweep(include_live: bool = False, timeout: float = 60.0) -> list[str]:
    """Remove the leftovers of earlier clusters; returns the ids removed.

    A cluster whose owner process is alive (another test session, or a ``simcluster.py up``) is
    left alone unless ``include_live``: then its owner is asked to tear down (SIGTERM) and
    whatever remains after ``timeout`` is removed anyway.
    """
    removed = []
    for cid in sorted(cluster_ids()):
        state = _read_state(cid) or {}
        if _owner_alive(state):
            if not include_live:
                continue
            owner = state["owner"]["pid"]
            if owner != os.getpid():  # let it tear down itself, as Ctrl-C would
                try:
                    os.kill(owner, signal.SIGTERM)
                except OSError:
                    pass
                deadline = time.monotonic() + timeout
                while _owner_alive(state) and time.monotonic() < deadline:
                    time.sleep(0.1)
        _teardown(cid)
        removed.append(cid)
    return removed


# ---------------------------------------------------------------------------------------------
# pytest integration


def unavailable_reason() -> str | None:
    """Why a simulated cluster cannot run here (None: it can)."""
    if sys.platform != "linux":
        return "needs Linux network and mount namespaces"
    if os.geteuid() != 0:
        return "needs root (network namespaces, bridges, mounts)"
    for tool in ("ip", "unshare", "nsenter", "mount", "java"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not on PATH"
    probe = f"elsimprobe{os.getpid()}"
    r = _sh("ip", "netns", "add", probe, check=False)
    if r.returncode:
        return f"`ip netns add` fails: {r.stderr.strip()}"
    _sh("ip", "netns", "del", probe, check=False)
    return None


def require() -> None:
    """Skip the calling test when a simulated cluster cannot run here; on CI (``CI`` set) fail
    instead, so a CI machine that lost the ability is noticed rather than silently skipped."""
    import pytest

    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"simulated cluster unavailable on CI: {reason}", pytrace=False)
        pytest.skip(f"simulated cluster unavailable: {reason}")


def cluster_fixture(scope: str = "module", **options):
    """A pytest fixture yielding a started ``SimCluster(**options)``, removed afterwards.

        from simcluster import cluster_fixture
        cluster = cluster_fixture(scope="module", hosts=3, shared=True)

    It sweeps leftovers of crashed runs first.
    """
    import pytest

    @pytest.fixture(scope=scope)
    def _cluster():
        require()
        sweep()
        with SimCluster(**options) as cluster:
            yield cluster

    return _cluster


# ---------------------------------------------------------------------------------------------
# CLI


def _live_states() -> list[dict]:
    states = [s for cid in sorted(cluster_ids()) if (s := _read_state(cid))]
    return [s for s in states if _owner_alive(s)]


def _cmd_up(args) -> int:
    swept = sweep()
    if swept:
        print(f"removed leftovers of simulated cluster(s) {', '.join(swept)}", flush=True)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    cluster = SimCluster(hosts=args.hosts, shared=args.shared, cores=args.cores, memory=args.memory,
                         spark=not args.no_spark)
    try:
        cluster.start()
        me = os.path.relpath(os.path.abspath(__file__))
        me = me if not me.startswith("..") else os.path.abspath(__file__)
        print(cluster.describe())
        print(f"up in {cluster.bring_up_seconds:.1f}s. Run a command on a host:\n"
              f"  {sys.executable} {me} exec edge -- hostname\n"
              f"  {sys.executable} {me} exec h1 -- ls /tmp/spark-disk/work\n"
              f"Ctrl-C (or `{me} down`) tears it down.", flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        print("\ntearing down ...", flush=True)
    finally:
        cluster.close()
        if cluster.teardown_seconds is not None:
            print(f"torn down in {cluster.teardown_seconds:.1f}s", flush=True)
    return 0


def _pick_state(cluster_id: str | None) -> dict:
    states = _live_states()
    if cluster_id:
        states = [s for s in states if s["id"] == cluster_id]
    if not states:
        raise SystemExit("no running simulated cluster" + (f" {cluster_id}" if cluster_id else "")
                         + " (start one with `simcluster.py up`)")
    if len(states) > 1:
        raise SystemExit("several simulated clusters are running: pick one with --cluster "
                         + " / ".join(s["id"] for s in states))
    return states[0]


def _cmd_exec(args) -> int:
    state = _pick_state(args.cluster)
    hosts = {h["name"]: h for h in state["hosts"]}
    if args.host not in hosts:
        raise SystemExit(f"no host {args.host!r}; hosts: {', '.join(hosts)}")
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise SystemExit("no command given (exec HOST -- CMD ...)")
    pid = hosts[args.host]["holder_pid"]
    # Keep the caller's directory when the host has it (the edge shares the machine's disk; a
    # worker host has its own /tmp), else run in /.
    wrapper = ('cd -- "$0" 2>/dev/null || { echo "simcluster: $0 does not exist on this host, '
               'running in /" >&2; cd /; }; exec "$@"')
    argv = ["nsenter", f"--target={pid}", "--net", "--mount", "--uts", "--",
            "/bin/sh", "-c", wrapper, os.getcwd()] + cmd
    os.execvpe("nsenter", argv, {**os.environ, **state["env"]})


def _cmd_list(args) -> int:
    for cid in sorted(cluster_ids()):
        state = _read_state(cid) or {}
        live = "running" if _owner_alive(state) else "leftover (owner gone)"
        print(f"{cid}  {live}  {state.get('subnet')}  {state.get('master_url') or ''}")
        for h in state.get("hosts", []):
            print(f"    {h['name']:5} {h['address']:15} holder {h['holder_pid']}")
    return 0


def _cmd_down(args) -> int:
    if args.cluster:
        state = _read_state(args.cluster) or {}
        if _owner_alive(state):
            os.kill(state["owner"]["pid"], signal.SIGTERM)
            deadline = time.monotonic() + 60
            while _owner_alive(state) and time.monotonic() < deadline:
                time.sleep(0.1)
        _teardown(args.cluster)
        removed = [args.cluster]
    else:
        removed = sweep(include_live=True)
    print(f"removed: {', '.join(removed) or 'nothing'}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="simcluster.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring a cluster up and keep it until Ctrl-C")
    up.add_argument("--hosts", type=int, default=3)
    up.add_argument("--shared", action="store_true", help="a directory visible on every host")
    up.add_argument("--cores", type=int, default=2, help="cores each Spark Worker offers")
    up.add_argument("--memory", default="3g", help="memory each Spark Worker offers")
    up.add_argument("--no-spark", action="store_true", help="hosts and network only")
    ex = sub.add_parser("exec", help="run a command on a host of the running cluster")
    ex.add_argument("--cluster", help="cluster id, when several run")
    ex.add_argument("host")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    sub.add_parser("list", help="simulated clusters on this machine")
    down = sub.add_parser("down", help="tear down every simulated cluster (or --cluster ID)")
    down.add_argument("--cluster")
    args = parser.parse_args(argv)
    return {"up": _cmd_up, "exec": _cmd_exec, "list": _cmd_list, "down": _cmd_down}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
