"""Finding, inspecting and stopping running applications (``pl_submit list|status|kill``).

Applications on this host are listed in ``$ELEARN_HOME/running/<app>.json`` while they run (an
embedded ZooKeeper is only reachable that way); with ``zk`` an external ensemble is asked directly.
"""
from __future__ import annotations

import json
import os
import time

from elearn.cluster.procs import pid_alive
from elearn.cluster.registry import ROOT, AppRegistry, Credentials
from elearn.cluster.zookeeper import connect
from elearn.driver.options import elearn_home
from elearn.errors import ElearnError


def publish_running(app_id: str, **entry) -> str:
    """List the application of this process as running on this host (``pl_submit list``, and
    ``status``/``kill`` of an embedded ZooKeeper, which only this host knows); returns the file."""
    path = os.path.join(elearn_home(), "running", f"{app_id}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"app_id": app_id, "pid": os.getpid(), **entry}, f)
    return path


def unpublish_running(path: str | None) -> None:
    if path:
        try:
            os.remove(path)
        except OSError:
            pass


def running_apps() -> list[dict]:
    """Applications started on this host that are still running (stale entries are removed)."""
    folder = os.path.join(elearn_home(), "running")
    found = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        try:
            with open(path) as f:
                entry = json.load(f)
        except (OSError, ValueError):
            continue
        if pid_alive(entry.get("pid", -1)):
            found.append(entry)
        else:
            try:
                os.remove(path)
            except OSError:
                pass
    return found


def _locate(app_id: str, zk: str | None) -> tuple[str, Credentials | None, dict | None]:
    entry = next((e for e in running_apps() if e["app_id"] == app_id), None)
    hosts = zk or (entry or {}).get("zk")
    if not hosts:
        known = ", ".join(e["app_id"] for e in running_apps()) or "none"
        raise ElearnError(f"no running application {app_id!r} on this host (running: {known}); "
                          "for an application on an external ZooKeeper pass --zk HOSTS")
    secret = (entry or {}).get("secret") or os.path.join(elearn_home(), "apps", app_id, "zk-secret")
    return hosts, Credentials.read(secret), entry


def app_status(app_id: str, zk: str | None = None) -> dict:
    hosts, auth, entry = _locate(app_id, zk)
    client = connect(hosts, auth)
    try:
        reg = AppRegistry(client, app_id)
        state = reg.state()
        if state is None:
            raise ElearnError(f"application {app_id!r} has no znodes at {hosts}")
        nodes = []
        for role in ("ps", "worker"):
            for index, info in sorted(reg.nodes(role).items()):
                nodes.append({"node": f"{role}:{index}", **info})
        return {"app_id": app_id, "zk": hosts, "state": state.get("state"),
                "generation": state.get("generation", 0), "pid": (entry or {}).get("pid"),
                "dir": (entry or {}).get("dir"), "nodes": nodes}
    finally:
        client.stop()
        client.close()


def format_status(status: dict) -> str:
    now = time.time()
    lines = [f"application {status['app_id']}: {status['state']} (generation {status['generation']}), "
             f"ZooKeeper {status['zk']}" + (f", driver pid {status['pid']}" if status.get("pid") else "")]
    lines.append(f"{'node':<10} {'host':<22} {'state':<10} {'restarts':>8} {'heartbeat':>10}  rows")
    for n in status["nodes"]:
        beat = f"{now - n['heartbeat']:.0f}s ago" if n.get("heartbeat") else "-"
        lines.append(f"{n['node']:<10} {str(n.get('host')) + ':' + str(n.get('port')):<22} "
                     f"{n.get('state', '?'):<10} {n.get('restarts', 0):>8} {beat:>10}  {n.get('rows', '')}")
    return "\n".join(lines)


def kill_app(app_id: str, zk: str | None = None, timeout: float = 120.0) -> str:
    """Ask the application's driver to stop cleanly; wait until it has."""
    hosts, auth, entry = _locate(app_id, zk)
    if auth is None:
        raise ElearnError(f"no credentials for {app_id!r} on this host: run kill where the "
                          "application was submitted (its znodes accept changes only from there)")
    client = connect(hosts, auth)
    try:
        reg = AppRegistry(client, app_id)
        if reg.state() is None:
            raise ElearnError(f"application {app_id!r} has no znodes at {hosts}")
        reg.request_kill()
    finally:
        client.stop()
        client.close()
    pid = (entry or {}).get("pid")
    deadline = time.monotonic() + timeout
    while pid and pid_alive(pid):
        if time.monotonic() > deadline:
            raise ElearnError(f"{app_id} was asked to stop but its driver (pid {pid}) is still "
                              f"running after {timeout:.0f}s")
        time.sleep(0.2)
    return f"{app_id} stopped"


def list_zk_apps(zk: str) -> list[str]:
    client = connect(zk)
    try:
        return sorted(client.get_children(ROOT)) if client.exists(ROOT) else []
    finally:
        client.stop()
        client.close()
