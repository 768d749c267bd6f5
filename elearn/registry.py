"""ZooKeeper registration: where every node of an application says who and where it is.

Layout, one namespace per application (``/elearn/<app-id>`` under an optional chroot)::

    state            {"state": "starting|running|restarting|done|failed", "generation": g, ...}
    cluster          the TF cluster spec the driver published once every node had reserved a port
    ps/<index>       ephemeral, one per PS node: {"host", "port", "state", "pid", ...}
    worker/<index>   ephemeral, one per worker node: as ps, plus what it spooled

An ephemeral znode lives as long as its daemon's ZooKeeper session: its presence is the node's
liveness. Waits poll with a deadline so that a missing node becomes an error naming it.
"""
from __future__ import annotations

import json
import time

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError

ROOT = "/elearn"
ROLES = ("ps", "worker")


def _dump(obj) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()


def _load(raw: bytes):
    return json.loads(raw.decode()) if raw else None


def app_credentials(secret_file: str) -> tuple[list, list]:
    """Digest credentials for one application: ``(auth_data, acl)`` for kazoo.

    Every znode of the application carries the ACL, so another application (or a stray client)
    cannot change or delete them; the daemons get the credentials with their Spark task. The
    secret is generated once per application and kept (mode 600) in its directory, so a re-run
    under the same name after a driver loss can still clean up and take over its namespace.
    """
    import os
    import secrets

    if os.path.exists(secret_file):
        with open(secret_file) as f:
            password = f.read().strip()
    else:
        password = secrets.token_hex(16)
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password)
    auth = [("digest", f"elearn:{password}")]
    return auth, acl_for(auth)


def acl_for(auth_data) -> list | None:
    """The application's ACL from its digest credentials (what the daemons are shipped): anyone
    may read (``pl_submit status`` from any host), only the application may change anything."""
    from kazoo.security import make_acl, make_digest_acl

    for scheme, credential in auth_data or []:
        if scheme == "digest":
            user, password = credential.split(":", 1)
            return [make_digest_acl(user, password, all=True), make_acl("world", "anyone", read=True)]
    return None


class AppRegistry:
    """The znodes of one application, seen through one kazoo client."""

    def __init__(self, client: KazooClient, app_id: str, acl=None):
        self.client = client
        self.app_id = app_id
        self.base = f"{ROOT}/{app_id}"
        self.acl = acl

    # -- driver side -------------------------------------------------------------------------
    def create(self) -> None:
        """The application's namespace, replacing what an earlier run of the same name left."""
        self.client.ensure_path(ROOT)  # shared by all applications: open
        self.delete()
        self.client.create(self.base, acl=self.acl)
        for path in (f"{self.base}/ps", f"{self.base}/worker"):
            self.client.create(path, acl=self.acl)
        self.set_state("starting", generation=0)

    def set_state(self, state: str, **extra) -> None:
        data = _dump({"state": state, "time": time.time(), **extra})
        path = f"{self.base}/state"
        try:
            self.client.set(path, data)
        except NoNodeError:
            self.client.create(path, data, acl=self.acl, makepath=True)

    def request_kill(self, reason: str = "pl_submit kill") -> None:
        path = f"{self.base}/kill"
        try:
            self.client.create(path, _dump({"reason": reason, "time": time.time()}), acl=self.acl)
        except NodeExistsError:
            pass

    def kill_requested(self) -> dict | None:
        try:
            return _load(self.client.get(f"{self.base}/kill")[0]) or {"reason": "kill"}
        except NoNodeError:
            return None

    def publish_cluster(self, spec: dict) -> None:
        path = f"{self.base}/cluster"
        try:
            self.client.create(path, _dump(spec), acl=self.acl)
        except NodeExistsError:
            self.client.set(path, _dump(spec))

    def delete(self) -> None:
        try:
            self.client.delete(self.base, recursive=True)
        except NoNodeError:
            pass

    # -- either side --------------------------------------------------------------------------
    def state(self) -> dict | None:
        try:
            return _load(self.client.get(f"{self.base}/state")[0])
        except NoNodeError:
            return None

    def cluster(self) -> dict | None:
        try:
            return _load(self.client.get(f"{self.base}/cluster")[0])
        except NoNodeError:
            return None

    def nodes(self, role: str) -> dict[int, dict]:
        try:
            children = self.client.get_children(f"{self.base}/{role}")
        except NoNodeError:
            return {}
        found = {}
        for child in children:
            try:
                found[int(child)] = _load(self.client.get(f"{self.base}/{role}/{child}")[0])
            except NoNodeError:
                continue
        return found

    # -- node side ----------------------------------------------------------------------------
    def register(self, role: str, index: int, info: dict) -> None:
        """Create this node's ephemeral znode, replacing one a dead session left behind."""
        path = f"{self.base}/{role}/{index}"
        try:
            self.client.create(path, _dump(info), acl=self.acl, ephemeral=True)
        except NodeExistsError:
            self.client.delete(path)
            self.client.create(path, _dump(info), acl=self.acl, ephemeral=True)

    def update(self, role: str, index: int, info: dict) -> None:
        path = f"{self.base}/{role}/{index}"
        try:
            self.client.set(path, _dump(info))
        except NoNodeError:
            self.register(role, index, info)
