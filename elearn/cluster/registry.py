"""ZooKeeper registration: where every node of an application says who and where it is.

Layout, one namespace per application (``/elearn/<app-id>`` under an optional chroot)::

    state            {"state": "starting|running|restarting|done|failed", "generation": g, ...}
    cluster          the TF cluster spec the driver published once every node had reserved a port
    ps/<index>       ephemeral, one per PS node: {"host", "port", "state", "pid", ...}
    worker/<index>   ephemeral, one per worker node: as ps, plus what it spooled

An ephemeral znode lives as long as its node task's ZooKeeper session: its presence is the node's
liveness. Waits poll with a deadline so that a missing node becomes an error naming it.
"""
from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from typing import ClassVar

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError

ROOT = "/elearn"
ROLES = ("ps", "worker")


def _dump(obj) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()


def _load(raw: bytes):
    return json.loads(raw.decode()) if raw else None


@dataclass(frozen=True)
class Credentials:
    """One application's ZooKeeper digest credentials, and the ACL every znode of it carries.

    Anyone may read (``pl_submit status`` from any host); only the application may change anything,
    so another application or a stray client cannot end an attempt or remove a node. The nodes get
    the credentials with their Spark task. The secret is generated once per application and kept
    (mode 600) in its directory, so a re-run under the same name after a driver loss can still
    clean up and take over its namespace.
    """

    password: str
    USER: ClassVar[str] = "elearn"

    @staticmethod
    def of_application(secret_file: str) -> "Credentials":
        """The application's credentials, created (and kept in ``secret_file``) on first use."""
        found = Credentials.read(secret_file)
        if found is not None:
            return found
        password = secrets.token_hex(16)
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password)
        return Credentials(password)

    @staticmethod
    def read(secret_file: str) -> "Credentials | None":
        """The credentials kept in ``secret_file``, or None where there are none."""
        if not os.path.exists(secret_file):
            return None
        with open(secret_file) as f:
            return Credentials(f.read().strip())

    @property
    def auth(self) -> list:
        """kazoo's ``auth_data``."""
        return [("digest", f"{self.USER}:{self.password}")]

    @property
    def acl(self) -> list:
        from kazoo.security import make_acl, make_digest_acl

        return [make_digest_acl(self.USER, self.password, all=True), make_acl("world", "anyone", read=True)]


class AppRegistry:
    """The znodes of one application, seen through one kazoo client."""

    def __init__(self, client: KazooClient, app_id: str, credentials: Credentials | None = None):
        self.client = client
        self.app_id = app_id
        self.base = f"{ROOT}/{app_id}"
        # Without credentials (a reader such as ``pl_submit status``) nothing is created.
        self.acl = credentials.acl if credentials is not None else None

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
