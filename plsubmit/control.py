"""``pl_submit list | status APP | kill APP``."""
from __future__ import annotations

from elearn import control


def list_apps(zk: str | None = None):
    """Running applications: those started on this host, or all on an external --zk."""
    if zk:
        names = control.list_zk_apps(zk)
        print("\n".join(names) if names else f"no applications at {zk}")
        return
    apps = control.running_apps()
    if not apps:
        print("no running applications on this host")
    for a in apps:
        print(f"{a['app_id']}  {a['mode']}  driver pid {a['pid']}  ZooKeeper {a['zk']}  {a['dir']}")


def status(app: str, zk: str | None = None):
    """Each node of APP: host, state, restarts, last heartbeat."""
    print(control.format_status(control.app_status(app, zk)))


def kill(app: str, zk: str | None = None, timeout: float = 120.0):
    """Stop APP cleanly: its driver tears down every node and runs shutdown()."""
    print(control.kill_app(app, zk, timeout))


COMMANDS = {"list": list_apps, "status": status, "kill": kill}
