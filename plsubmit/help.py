"""``pl_submit --help``: one page in the style of ``spark-submit --help``, built from ``run``'s
signature and docstring so that the flags and their text are written once."""
from __future__ import annotations

import inspect
import re
import textwrap

USAGE = """\
Usage: pl_submit JOB_FILE [options]
       pl_submit list [--zk HOSTS]
       pl_submit status APP [--zk HOSTS]
       pl_submit kill APP [--zk HOSTS]
"""

# Flag groups in the order a user reads them; every parameter of ``run`` is in exactly one.
GROUPS = [
    ("Cluster", ["ps", "workers", "master", "zk", "conf"]),
    ("Environment and executor shapes", ["archives", "venv", "conda_env", "ps_cores", "ps_memory",
                                         "worker_cores", "worker_memory", "worker_gpus"]),
    ("Job", ["arg", "job_class", "app_name", "fill", "checkpoint_dir", "model_dir", "work_dir"]),
    ("Waits and recovery", ["register_timeout", "feed_timeout", "max_restarts",
                            "heartbeat_timeout", "runtime"]),
    ("Output", ["tf_log", "tensorboard", "quiet"]),
]
METAVARS = {"ps": "N", "workers": "N", "master": "URL", "zk": "HOSTS[/chroot]", "conf": "KEY=VALUE",
            "arg": "KEY=VALUE", "fill": "COLUMN=VALUE", "archives": "ENV.tar.gz", "venv": "PATH",
            "conda_env": "NAME_OR_PREFIX", "ps_cores": "N", "worker_cores": "N", "worker_gpus": "N",
            "ps_memory": "SIZE", "worker_memory": "SIZE", "job_class": "NAME", "app_name": "NAME",
            "checkpoint_dir": "DIR", "model_dir": "DIR", "work_dir": "DIR", "runtime": "tf|horovod",
            "register_timeout": "SECONDS", "feed_timeout": "SECONDS", "heartbeat_timeout": "SECONDS",
            "max_restarts": "N"}


def _arg_texts(doc: str) -> dict:
    """``{name: text}`` from the docstring's ``Args:`` section (continuation lines joined)."""
    out, name = {}, None
    section = doc.split("Args:", 1)[1] if "Args:" in doc else ""
    for line in textwrap.dedent(section).splitlines():
        m = re.match(r"^(\w+): (.*)$", line)
        if m:
            name = m.group(1)
            out[name] = m.group(2).strip()
        elif name and line.strip():
            out[name] += " " + line.strip()
    return out


def render(run, width: int = 100) -> str:
    doc = inspect.getdoc(run) or ""
    summary, example = doc.split("\n\n")[0], doc.split("\n\n")[1].strip()
    texts = _arg_texts(doc)
    params = inspect.signature(run).parameters
    grouped = [n for _, names in GROUPS for n in names]
    missing = sorted(set(params) - set(grouped) - {"job_file"})
    assert not missing, f"pl_submit flags without a help group: {missing}"
    lines = [USAGE, summary, "", "  " + example, ""]
    for title, names in GROUPS:
        lines.append(f"{title}:")
        for name in names:
            flag = "--" + name.replace("_", "-")
            default = params[name].default
            head = f"  {flag}" + ("" if isinstance(default, bool) else f" {METAVARS.get(name, 'VALUE')}")
            text = texts.get(name, "")
            if default is not None and default is not False and "Default" not in text:
                text += f" (default: {default:g})" if isinstance(default, float) else f" (default: {default})"
            body = textwrap.wrap(text, width - 30) or [""]
            first = head.ljust(29) + " " + body[0] if len(head) < 29 else head + "\n" + " " * 30 + body[0]
            lines.append(first)
            lines.extend(" " * 30 + b for b in body[1:])
        lines.append("")
    lines.append("Flags may also be written with underscores (--app_name); --conf, --arg and --fill repeat.")
    lines.append("Docs: docs/api.md (the job API), docs/clusters.md, docs/operations.md.")
    return "\n".join(lines)
