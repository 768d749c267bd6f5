"""``pl_submit --help``: one page in the style of ``spark-submit --help``, built from the options'
own definitions (``elearn.driver.options.SubmitOptions``), so that each flag's text is written once."""
from __future__ import annotations

import inspect
import textwrap
from dataclasses import MISSING

from elearn.driver.options import ENVIRONMENT, GROUPS, option_fields

USAGE = """\
Usage: pl_submit JOB_FILE [options]
       pl_submit list [--zk HOSTS]
       pl_submit status APP [--zk HOSTS]
       pl_submit kill APP [--zk HOSTS] [--timeout SECONDS]
       pl_submit --version
"""


def render(run, width: int = 100) -> str:
    doc = inspect.getdoc(run) or ""
    summary, example = doc.split("\n\n")[0], doc.split("\n\n")[1].strip()
    lines = [USAGE, summary, "", "  " + example, ""]
    for title in GROUPS:
        lines.append(f"{title}:")
        for f in option_fields():
            flag = f.metadata["flag"]
            if flag.group != title:
                continue
            is_bool = str(f.type).startswith("bool")
            head = f"  {flag.flag(f.name)}" + ("" if is_bool else f" {flag.metavar or 'VALUE'}")
            text = flag.help
            # Every default is shown: 0 too (--ps 0 is allreduce mode), unless the text says it.
            if f.default is not MISSING and f.default is not None and not is_bool and "Default" not in text:
                text += f" Default: {f.default:g}." if isinstance(f.default, float) else f" Default: {f.default}."
            body = textwrap.wrap(text, width - 30) or [""]
            first = head.ljust(29) + " " + body[0] if len(head) < 29 else head + "\n" + " " * 30 + body[0]
            lines.append(first)
            lines.extend(" " * 30 + b for b in body[1:])
        lines.append("")
    lines.append("Environment variables:")
    for name, text in ENVIRONMENT:
        body = textwrap.wrap(text, width - 30)
        lines.append(f"  {name}" if len(name) >= 28 else f"  {name}".ljust(29) + " " + body[0])
        lines.extend(" " * 30 + b for b in (body if len(name) >= 28 else body[1:]))
    lines.append("")
    lines.append("Flags may also be written with underscores (--app_name); --conf, --arg and --fill repeat;")
    lines.append("-c is --conf and --verbose is --tf-log, as with spark-submit.")
    lines.append("Docs: docs/api.md (the job API), docs/clusters.md, docs/operations.md.")
    return "\n".join(lines)
