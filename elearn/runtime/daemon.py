"""The daemon beside every TF process: runs inside a Spark task for the node's whole life.

It reserves a port, registers the node's ephemeral znode, waits for the driver's cluster spec,
starts the TF process as a child that cannot outlive it, and watches both the child and the
application's state in ZooKeeper. A child that dies is restarted at the same address (PS-mode
TensorFlow tolerates a worker coming back); a lost ZooKeeper session re-registers the node. When the
application is done the child is stopped and the node's statistics are returned to Spark.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

from kazoo.protocol.states import KazooState

from elearn.errors import ClusterError
from elearn.mpi.restarts import describe_exit
from elearn.procs import free_port, popen_child, stop_process
from elearn.registry import AppRegistry, acl_for, wait_until
from elearn.resources_profile import task_gpu_env
from elearn.runtime.hosts import advertise_host
from elearn.sparkjob import quoted
from elearn.zookeeper import connect

log = logging.getLogger(__name__)

FINAL_STATES = ("done", "failed")


def tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return ""


def child_env(app: dict, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    # The executor's import path (pyspark.zip, --py-files, a shipped archive) for the child too.
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    if not app.get("tf_log"):
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    # The TF process sees only the GPUs Spark assigned to this task (none: none).
    env.update(task_gpu_env())
    env.update(app.get("env") or {})
    env.update(extra or {})
    return env


def wait_listening(host: str, port: int, proc: subprocess.Popen, timeout: float) -> None:
    def up():
        if proc.poll() is not None:
            raise ClusterError(f"TF process {describe_exit(proc.returncode)} before serving")
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            return False

    wait_until(up, timeout, interval=0.2,
               on_timeout=lambda: ClusterError(f"TF process did not listen on {host}:{port} "
                                               f"within {timeout:.0f}s"))


class NodeDaemon:
    """One PS or worker node of a PS-mode application."""

    def __init__(self, app: dict, role: str, index: int, extra: dict | None = None):
        self.app = app
        self.role, self.index = role, index
        self.extra = dict(extra or {})
        node_dir = os.path.abspath(app["node_dir"])  # relative to the executor's working dir
        os.makedirs(os.path.join(node_dir, "logs"), exist_ok=True)
        self.log_path = os.path.join(node_dir, "logs", f"{role}-{index}.log")
        self.restarts = 0
        self.port = None
        self.child: subprocess.Popen | None = None
        self._session_lost = threading.Event()

    def _info(self, state: str, **more) -> dict:
        return {"host": self.host, "port": self.port, "state": state, "pid": os.getpid(),
                "generation": getattr(self, "generation", 0),
                "hostname": socket.gethostname(), "log": self.log_path, "restarts": self.restarts,
                "heartbeat": time.time(), **self.extra, **more}

    def _on_zk_state(self, state) -> None:
        if state == KazooState.LOST:
            self._session_lost.set()

    def _spawn_child(self) -> subprocess.Popen:
        """Start the TF process now; it imports TensorFlow while the cluster forms (see node.py)."""
        logf = open(self.log_path, "ab")
        try:
            return popen_child([sys.executable, "-u", "-m", "elearn.runtime.node"],
                               stdin=subprocess.PIPE, stdout=logf, stderr=subprocess.STDOUT,
                               env=child_env(self.app, {"ELEARN_NODE": json.dumps(
                                   {"role": self.role, "index": self.index})}))
        finally:
            logf.close()

    def _configure(self, child: subprocess.Popen, spec: dict) -> None:
        child.stdin.write((json.dumps({"cluster": spec}) + "\n").encode())
        child.stdin.flush()

    def connect(self) -> None:
        """Join ZooKeeper and say this node exists (state ``spooling`` while a worker feeds)."""
        self.started = time.time()
        auth = [tuple(a) for a in self.app.get("zk_auth") or []] or None
        self.client = connect(self.app["zk"], timeout=self.app.get("zk_timeout", 15), auth_data=auth)
        self.client.add_listener(self._on_zk_state)
        self.reg = AppRegistry(self.client, self.app["app_id"], acl=acl_for(auth))
        self.host = advertise_host(self.app.get("loopback", False))

    def start_child(self) -> None:
        """Reserve the node's port and start its TF process, which imports TensorFlow meanwhile.

        A worker calls this before it spools its partition, so that the import (seconds of CPU)
        overlaps the feed instead of following it.
        """
        self.port = free_port()
        self.child = self._spawn_child()

    def stop_child(self) -> None:
        if self.child is not None:
            stop_process(self.child, grace=3)
            self.child = None

    def announce(self, state: str, **more) -> None:
        self.reg.register(self.role, self.index, self._info(state, **more))

    def _my_spec(self, reg: AppRegistry, min_generation: int = 0):
        """The published cluster spec once it names this node at its address, as (generation, spec)."""
        try:
            published = reg.cluster()
        except Exception:
            return None
        if not published or published.get("generation", 0) < min_generation:
            return None
        spec = published["cluster"]
        addresses = spec.get(self.role, [])
        if self.index < len(addresses) and addresses[self.index] == f"{self.host}:{self.port}":
            return published.get("generation", 0), spec
        return None

    def _wait_spec(self, reg: AppRegistry, min_generation: int):
        return wait_until(
            lambda: self._my_spec(reg, min_generation) or self._app_over(reg),
            self.app["register_timeout"] + self.app.get("feed_timeout", 3600),
            on_timeout=lambda: ClusterError(f"{self.role}:{self.index} got no cluster spec"))

    def _serve(self, reg: AppRegistry, spec: dict, child: subprocess.Popen | None = None):
        child = child or self._spawn_child()
        self._configure(child, spec)
        try:
            wait_listening(self.host, self.port, child, self.app.get("start_timeout", 180))
        except ClusterError as exc:  # the driver shows this through Spark: say where and why
            stop_process(child, grace=1)
            raise ClusterError(f"{self.role}:{self.index} on {socket.gethostname()}: {exc}; log "
                               f"{self.log_path}, last lines:\n{quoted(tail(self.log_path, 20))}") from None
        reg.update(self.role, self.index, self._info("running", child_pid=child.pid))
        return child

    def run(self) -> dict:
        if not hasattr(self, "client"):
            self.connect()
        started, client, reg = self.started, self.client, self.reg
        self.generation = 0
        child = None
        exit_codes = []
        try:
            if self.child is None:
                self.start_child()
            child, self.child = self.child, None
            reg.register(self.role, self.index, self._info("reserved"))
            got = self._wait_spec(reg, 0)
            if not isinstance(got, tuple):
                return self._stats(started, exit_codes)
            self.generation, spec = got
            child = self._serve(reg, spec, child)
            last_beat = time.time()
            while True:
                if self._app_over(reg):
                    break
                wanted = self._wanted_generation(reg)
                if wanted > self.generation:
                    # The driver re-forms the cluster: serve the new spec with a fresh TF server.
                    exit_codes.append(stop_process(child, grace=3))
                    child = None
                    reg.update(self.role, self.index, self._info("reserved"))
                    got = self._wait_spec(reg, wanted)
                    if not isinstance(got, tuple):
                        break
                    self.generation, spec = got
                    child = self._serve(reg, spec)
                    continue
                code = child.poll()
                if code is not None:
                    exit_codes.append(code)
                    if self.restarts >= self.app.get("max_restarts", 3):
                        reg.update(self.role, self.index,
                                   self._info("failed", exit_code=code, log_tail=tail(self.log_path)))
                        wait_until(lambda: self._app_over(reg), 3600 * 24 * 365)
                        break
                    self.restarts += 1
                    reg.update(self.role, self.index, self._info("restarting", exit_code=code))
                    child = self._serve(reg, spec)
                if self._session_lost.is_set() and client.connected:
                    self._session_lost.clear()
                    reg.register(self.role, self.index, self._info("running", child_pid=child.pid))
                if time.time() - last_beat > 5:
                    last_beat = time.time()
                    try:
                        reg.update(self.role, self.index, self._info("running", child_pid=child.pid))
                    except Exception:  # a ZooKeeper outage must not kill a healthy node
                        pass
                time.sleep(0.25)
        finally:
            if child is not None:
                code = stop_process(child, grace=5)
                exit_codes.append(code)
            try:
                client.stop()
                client.close()
            except Exception:
                pass
        return self._stats(started, exit_codes)

    def _wanted_generation(self, reg: AppRegistry) -> int:
        try:
            state = reg.state() or {}
        except Exception:
            return self.generation
        return int(state.get("generation", 0)) if state.get("state") in ("restarting", "running") \
            else self.generation

    def _app_over(self, reg: AppRegistry):
        try:
            state = reg.state()
        except Exception:
            return False
        if state is None or state.get("state") in FINAL_STATES:
            return {"over": True}
        return False

    def _stats(self, started: float, exit_codes) -> dict:
        return {"role": self.role, "index": self.index, "host": getattr(self, "host", None),
                "port": getattr(self, "port", None), "restarts": self.restarts,
                "seconds": round(time.time() - started, 3), "log": self.log_path,
                "exit_codes": exit_codes, **self.extra}
