"""Build a real, packable virtualenv holding elearn's runtime, for the environment-shipping tests.

The venv is created by ``python -m venv`` from the base interpreter of the test's own venv, and its
site-packages receive the runtime's installed distributions as hard links (same bytes, no copy) plus
a regular, non-editable install of elearn. venv-pack then packs real files, exactly as a user's venv.
Left out, and why: pyspark (Spark puts its own pyspark.zip on the executors' path), pip, the
editable-install hooks of the development venv (venv-pack rightly refuses them), and TensorFlow's
C++ headers (430 MB used only to compile custom ops).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_PREFIXES = ("pyspark", "pip", "__editable__", "elearn", "__pycache__", "distutils-precedence",
                 "clang", "libclang")


def base_python() -> str:
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def _link_tree(src: str, dst: str) -> None:
    try:
        subprocess.run(["cp", "-al", src, dst], check=True, capture_output=True)
    except subprocess.CalledProcessError:  # another filesystem: hard links impossible, copy
        subprocess.run(["cp", "-a", src, dst], check=True)


def build_runtime_venv(dest: str) -> str:
    subprocess.run([base_python(), "-m", "venv", "--without-pip", dest], check=True, timeout=120)
    site = sysconfig.get_paths()["purelib"]
    target = os.path.join(dest, "lib", f"python{sys.version_info.major}.{sys.version_info.minor}",
                          "site-packages")
    for name in sorted(os.listdir(site)):
        if name.lower().startswith(SKIP_PREFIXES):
            continue
        _link_tree(os.path.join(site, name), target)
    shutil.rmtree(os.path.join(target, "tensorflow", "include"), ignore_errors=True)
    # Build from a copy: an in-tree build would leave build/ in the checkout other runs share.
    src = dest + ".src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "__pycache__", "tests", "bench", "examples", "docs"))
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--no-build-isolation", "--target", target, src],
                       check=True, timeout=300, capture_output=True)
    finally:
        shutil.rmtree(src, ignore_errors=True)
    return dest
