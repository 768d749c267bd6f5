"""Cost of shipping the TensorFlow runtime as a venv-pack archive, measured side by side.

Builds the same packable runtime venv the cluster test ships (tests/envbuild.py), then times:
packing at gzip level 0 and level 1, the archive check of a fresh archive, and a second submit's
cache lookup (the content fingerprint) that skips packing. Prints one table with ratios to the
cache lookup.

    /work/venv/bin/python bench/envpack.py [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from envbuild import build_runtime_venv  # noqa: E402

from elearn.driver.envpack import check_archive, pack_venv  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", help="work in this directory and keep it")
    args = ap.parse_args()
    root = args.keep or tempfile.mkdtemp(prefix="elearn-bench-env-")
    try:
        t_build, venv = timed(lambda: build_runtime_venv(os.path.join(root, "runtime")))
        rows = [("build venv (hard links + pip install elearn)", t_build, None)]
        for level in ("0", "1"):
            os.environ["ELEARN_PACK_LEVEL"] = level
            cache = os.path.join(root, f"cache{level}")
            t_pack, env = timed(lambda: pack_venv(venv, cache))
            rows.append((f"pack, gzip level {level}", t_pack, os.path.getsize(env.archive)))
            if level == "1":
                t_check, _ = timed(lambda: check_archive(env.archive))
                rows.append(("check a fresh archive (tar -t up to bin/python)", t_check, None))
                t_hit, again = timed(lambda: pack_venv(venv, cache))
                assert not again.packed
                rows.append(("second submit: fingerprint, cache hit", t_hit, None))
        base = rows[-1][1]
        print(f"{'step':<50} {'seconds':>9} {'x cache hit':>12} {'archive MB':>11}")
        for name, secs, size in rows:
            mb = f"{size / 1e6:,.0f}" if size else ""
            print(f"{name:<50} {secs:>9.1f} {secs / base:>12.0f} {mb:>11}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
