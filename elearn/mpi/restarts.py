"""Restart-all for allreduce mode, coordinated in ZooKeeper.

A failed barrier result stage aborts the whole Spark job, so the group's restarts are elearn's own:
the Spark tasks stay alive and relaunch their TF processes. Attempt ``g`` of the group ends for
everyone as soon as one task creates ``/elearn/<app>/allreduce/restart-<g>``; creating a znode is
atomic, so the first failure wins and names the cause, and later ones see it already exists.
"""
from __future__ import annotations

import json
import signal

from kazoo.exceptions import NodeExistsError, NoNodeError


# A worker's exit code for elearn's own errors in train (FeedError, JobError: nulls, a missing
# column, a bad option). The same input fails the same way every time: restarting cannot help.
EXIT_NOT_RETRYABLE = 3


def describe_exit(code: int | None) -> str:
    """``-9`` -> ``"killed by SIGKILL"``; ``1`` -> ``"exited with code 1"``."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class GroupRestarts:
    """The restart requests of one application's allreduce group."""

    def __init__(self, client, app_id: str, acl=None):
        self.client = client
        self.base = f"/elearn/{app_id}/allreduce"
        self.acl = acl  # the application's (elearn.registry.acl_for): no one else may end an attempt

    def request(self, attempt: int, index: int, reason: str, final: bool = False) -> bool:
        """Ask every task to end ``attempt`` (``final``: and not to start another); False when
        another task asked first."""
        data = json.dumps({"attempt": attempt, "worker": index, "reason": reason, "final": final}).encode()
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


def may_restart(attempt: int, max_restarts: int, outcomes=()) -> bool:
    """Whether a group whose attempt ``attempt`` (0-based) failed gets another one."""
    return attempt < max_restarts and not any(o.get("final") for o in outcomes)
