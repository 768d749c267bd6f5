"""When each TF process of a run grows: RSS of the PS, the workers and the coordinator over time.

    python bench/rss_timeline.py -- python bench/ctr.py --epochs 2 --variants "ps1x1@lookup=elearn"

Runs the command after ``--`` and samples, every 0.2 s, the RSS of every elearn TF server (by its
role) and training process on this host; prints each process's steps of at least ``--step`` MiB,
seconds counted from the first TF server's start. A peak that falls back shows a transient copy
(an initial value, a checkpoint being written); a step that stays is state, or memory the process
keeps after freeing it.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

from ctr import classify_process, read_proc  # this folder is the script's import root


def _sample() -> dict:
    """{(kind, pid): RSS MiB} of the TF servers (``TF ps``, ``TF worker``) and training processes
    (``trainer``) running now, named as ``bench/ctr.py`` names them."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            kind = classify_process(int(d), root=-1)
        except (ValueError, IndexError):  # read mid-exec
            continue
        if not kind.startswith(("TF ", "trainer")):
            continue
        status = read_proc(f"/proc/{d}/status") or ""  # gone, or a zombie: no VmRSS line
        rss = next((int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmRSS:")), None)
        if rss is not None:
            out[(kind, int(d))] = rss // 1024
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--step", type=int, default=100, help="print changes of at least this many MiB")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        p.error("give the command to run after --")
    series: dict = {}
    done = threading.Event()

    def sample():
        while not done.is_set():
            now = time.monotonic()
            for key, rss in _sample().items():
                series.setdefault(key, []).append((now, rss))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = subprocess.call(cmd)
    done.set()
    sampler.join()
    if not series:
        sys.exit(f"no TF process of elearn was seen (exit code {code})")
    t0 = min(points[0][0] for (kind, _), points in series.items() if kind.startswith("TF"))
    for (kind, pid), points in sorted(series.items(), key=lambda kv: kv[1][0][0]):
        steps, last = [], None
        for t, rss in points:
            if last is None or abs(rss - last) >= args.step:
                steps.append(f"{t - t0:+.1f}s {rss:,}")
                last = rss
        peak = max(rss for _, rss in points)
        print(f"{kind} (pid {pid}): peak {peak:,} MiB, at the end {points[-1][1]:,} MiB; MiB over time: "
              + ", ".join(steps))
    sys.exit(code)


if __name__ == "__main__":
    main()
