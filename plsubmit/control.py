"""``pl_submit list | status APP | kill APP``."""
from __future__ import annotations

import inspect

from elearn.driver import running as control
from elearn.driver.options import suggestion
from elearn.errors import ElearnError


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
METAVARS = {"--zk": "HOSTS", "--timeout": "SECONDS"}


def check_argv(argv: list[str]) -> None:
    """Refuse what the command does not take, before it runs (fire would run the command first and
    then print its own "Could not consume arg" page), the way the main command's flags are checked."""
    from plsubmit.cli import UsageError

    command, rest = argv[0], argv[1:]
    params = inspect.signature(COMMANDS[command]).parameters
    flags = {"--" + name: p for name, p in params.items() if p.default is not inspect.Parameter.empty}
    needed = [name.upper() for name, p in params.items() if p.default is inspect.Parameter.empty]
    usage = " ".join(["pl_submit", command, *needed, *(f"[{f} {METAVARS[f]}]" for f in flags)])
    positionals, i = [], 0
    while i < len(rest):
        token = rest[i]
        name, has_value, value = token.partition("=")
        if token.startswith("-") and len(token) > 1:
            canonical = "--" + name.lstrip("-").replace("_", "-")
            if canonical not in flags:
                hint = suggestion(canonical, sorted(flags))
                raise UsageError(f"{command} takes no flag {name}" + (f": {hint}" if hint else "")
                                 + f" (usage: {usage})")
            if not has_value:
                if i + 1 >= len(rest) or rest[i + 1].startswith("--"):
                    raise UsageError(f"{canonical} needs a value (usage: {usage})")
                i += 1
                value = rest[i]
            kind = flags[canonical].annotation
            if "float" in str(kind):
                try:
                    float(value)
                except ValueError:
                    raise UsageError(f"{canonical} must be a number, got {value!r}") from None
        else:
            positionals.append(token)
        i += 1
    if len(positionals) != len(needed):
        given = f", got {' '.join(positionals)}" if positionals else ""
        raise UsageError(f"{command} takes {' '.join(needed) or 'no argument'}{given} "
                         f"(usage: {usage})")


__all__ = ["COMMANDS", "check_argv", "list_apps", "status", "kill", "ElearnError"]
