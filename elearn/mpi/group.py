"""The allreduce group's restart requests, coordinated in ZooKeeper.

A failed barrier result stage aborts the whole Spark job, so the group's restarts are elearn's own:
the Spark tasks stay alive and relaunch their TF processes. Attempt ``g`` of the group ends for
everyone as soon as one task creates ``/elearn/<app>/allreduce/restart-<g>``; creating a znode is
atomic, so the first failure wins and names the cause, and later ones see it already exists.
"""
from __future__ import annotations

import json

from kazoo.exceptions import NodeExistsError, NoNodeError

from elearn.cluster.registry import AppRegistry


class GroupRestarts:
    """The restart requests of one application's allreduce group."""

    def __init__(self, registry: AppRegistry):
        self.client = registry.client
        self.base = f"{registry.base}/allreduce"
        self.acl = registry.acl  # the application's: no one else may end an attempt

    def request(self, attempt: int, index: int, what: str, final: bool = False) -> bool:
        """Ask every task to end ``attempt`` because worker ``index`` ``what`` (``"killed by
        SIGKILL"``; ``final``: and not to start another); False when another task asked first.
        The request says ``what`` on its own, for tallies, and as ``reason`` with the worker."""
        data = json.dumps({"attempt": attempt, "worker": index, "what": what,
                           "reason": f"worker {index} {what}", "final": final}).encode()
        try:
            self.client.create(f"{self.base}/restart-{attempt}", data, acl=self.acl, makepath=True)
            return True
        except NodeExistsError:
            return False

    def requested(self, attempt: int) -> dict | None:
        """Who ended ``attempt`` and why, or None while it runs."""
        try:
            return json.loads(self.client.get(f"{self.base}/restart-{attempt}")[0].decode())
        except NoNodeError:
            return None

    def all(self) -> list[dict]:
        """Every request so far, in attempt order (the driver reports them)."""
        try:
            names = self.client.get_children(self.base)
        except NoNodeError:
            return []
        found = [self.requested(int(n.split("-", 1)[1])) for n in names if n.startswith("restart-")]
        return sorted((f for f in found if f), key=lambda f: f["attempt"])
