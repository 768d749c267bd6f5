"""The driver JVM's class-data archive: written by the first start, used by the next, and a damaged
one never stops Spark from starting. Each start is a fresh Python process with a real Spark JVM."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

START = r"""
import json, os, sys
from pyspark import SparkContext
from elearn.driver.jvmcache import fresh_jvm_class_cache
from elearn.driver.session import build_session

cache = fresh_jvm_class_cache({})
spark = build_session("jvmcache-test", "local[1]", {}, class_cache=cache)
with open(f"/proc/{SparkContext._gateway.proc.pid}/cmdline", "rb") as f:
    cmdline = f.read().decode()
state = {"dumping": cache.dumping, "in_use": cache.in_use, "path": cache.path,
         "count": spark.range(1000).count(),
         "uses_archive": "SharedArchiveFile" in cmdline, "writes_archive": "ArchiveClassesAtExit" in cmdline}
spark.stop()
state["kept"] = cache.finish(keep=True)
print(json.dumps(state))
"""


def start(cache_dir) -> dict:
    env = {**os.environ, "ELEARN_JVM_CACHE": str(cache_dir)}
    out = subprocess.run([sys.executable, "-c", START], env=env, capture_output=True, text=True, cwd=cache_dir,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_archive_written_then_used_and_a_damaged_one_is_replaced(tmp_path):
    first = start(tmp_path)
    assert first["writes_archive"] and first["kept"] and first["count"] == 1000
    archive = first["path"]
    assert os.path.getsize(archive) > 1_000_000
    assert int(open(archive + ".size").read()) == os.path.getsize(archive)

    second = start(tmp_path)
    assert second["uses_archive"] and second["in_use"] and not second["dumping"]
    assert second["count"] == 1000

    # A truncated archive makes the JVM abort at start; simulate one that still looks whole.
    with open(archive, "r+b") as f:
        f.truncate(1_000_000)
    with open(archive + ".size", "w") as f:
        f.write("1000000")
    third = start(tmp_path)
    assert third["count"] == 1000 and not third["uses_archive"]
    assert not os.path.exists(archive)


def test_off_switch(tmp_path, monkeypatch):
    from elearn.driver.jvmcache import SparkClassCache

    monkeypatch.setenv("ELEARN_JVM_CACHE", "off")
    cache = SparkClassCache({})
    assert cache.java_options() == "" and not cache.dumping


def test_first_run_prints_no_jvm_warnings_leaves_nothing_and_the_cache_stays_bounded(tmp_path, pl_submit):
    """The first submit on a machine writes the archive: its console has no CDS lines, and the
    archive is in place the moment pl_submit exits (it is moved there only after the dumping JVM
    exited: pl_submit waited for it rather than leaving it to dump on its own); nothing of the
    run outlives it. Archives of other installs (another driver class path changes the
    fingerprint as another pyspark or Java would) are pruned to the cache's bound, the most
    recently used kept."""
    from conftest import job

    from elearn.driver.jvmcache import KEEP

    cache = tmp_path / "jvm-cache"
    cache.mkdir()
    run = pl_submit(job("linear_fit.py"), "--ps", 1, "--workers", 1, "--arg", "rows=2000",
                    "--arg", "epochs=1", env={"ELEARN_JVM_CACHE": str(cache)}, check_orphans=False, timeout=600)
    assert run.returncode == 0, run.output[-3000:]
    assert "first start of this Spark on this machine" in run.stdout
    first = sorted(p.name for p in cache.glob("spark-driver-*.jsa"))
    assert len(first) == 1 and not list(cache.glob("*.tmp")), sorted(os.listdir(cache))
    assert "[cds]" not in run.output and "[warning]" not in run.output
    from conftest import assert_no_orphans

    assert_no_orphans(run.tag)
    for extra in ("a", "b"):
        env = {**os.environ, "ELEARN_JVM_CACHE": str(cache)}
        script = START.replace("fresh_jvm_class_cache({})",
                               f"fresh_jvm_class_cache({{'spark.driver.extraClassPath': '/nowhere/{extra}.jar'}})")
        script = script.replace('build_session("jvmcache-test", "local[1]", {},',
                                f'build_session("jvmcache-test", "local[1]", '
                                f'{{"spark.driver.extraClassPath": "/nowhere/{extra}.jar"}},')
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                             cwd=cache, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        assert json.loads(out.stdout.strip().splitlines()[-1])["kept"]
    left = sorted(p.name for p in cache.glob("spark-driver-*.jsa"))
    assert len(left) == KEEP and first[0] not in left  # the least recently used one went
    assert len(list(cache.glob("*.size"))) == KEEP
