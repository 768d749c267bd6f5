"""A class-data sharing (CDS) archive for the driver's Spark JVM: seconds off every start but the first.

Starting Spark's driver JVM is mostly loading and verifying the same ten thousand classes from the
same jars, every time. Java 13+ can write the classes a run loaded to an archive at exit
(``-XX:ArchiveClassesAtExit``) and map that archive into later JVMs (``-XX:SharedArchiveFile``);
on this project's test machine that made ``SparkSession`` creation and the first job about 40%
faster (see ``bench/README.md``). The first run on a machine writes the archive, the ones after it
use it. The archive is only valid for the same JVM and the same class path, so its name carries a
fingerprint of both; an archive that does not match is ignored by the JVM (``-Xshare:auto``), never
fatal.

The archive lives outside ``ELEARN_HOME`` (it is a property of the machine's Java and Spark, not
of any application): ``$ELEARN_JVM_CACHE``, else ``$XDG_CACHE_HOME/elearn/jvm``, else
``~/.cache/elearn/jvm``. ``ELEARN_JVM_CACHE=off`` disables it.

Each distinct install (a new pyspark, another Java, another driver class path) gets its own archive
of about 140 MB, so the folder keeps only the ``KEEP`` archives used most recently (an archive's
modification time is touched whenever a JVM starts with it) and removes the rest, along with the
temporary files of dumps that never finished.

Writing the archive makes the JVM log one ``[warning][cds]`` line per class it cannot archive (classes
of signed jars, old class-file versions): 600-700 lines on stdout at exit. They say nothing a user
can act on, so CDS logging is turned off for the driver JVM.
"""
from __future__ import annotations

import glob
import hashlib
import logging
import os
import shutil
import time

log = logging.getLogger(__name__)

KEEP = 2                      # archives kept, most recently used first
QUIET = "-Xlog:cds*=off"      # no per-class CDS warnings on the console
STALE_TMP_SECONDS = 3600      # a dump's temporary file older than this belongs to a dead JVM


def cache_root() -> str | None:
    configured = os.environ.get("ELEARN_JVM_CACHE")
    if configured is not None:
        return None if configured.strip().lower() in ("", "off", "0", "false", "no") else configured
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "elearn", "jvm")


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    return os.path.realpath(java) if java and os.path.exists(java) else None


def _fingerprint(class_path_files: list[str], extra: str) -> str | None:
    java = _java()
    if java is None:
        return None
    h = hashlib.sha256()
    for path in [java, *sorted(class_path_files)]:
        try:
            st = os.stat(path)
        except OSError:
            continue
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    h.update(extra.encode())
    return h.hexdigest()[:16]


class SparkClassCache:
    """The archive for one Spark install, one JVM and one driver class path."""

    def __init__(self, conf: dict):
        import pyspark

        self.path = self._tmp = None
        self.dumping = self.in_use = False
        root = cache_root()
        jars = glob.glob(os.path.join(os.path.dirname(pyspark.__file__), "jars", "*.jar"))
        # Anything the user adds to the driver's class path changes what the archive may hold.
        extra = "\0".join(f"{k}={conf.get(k, '')}" for k in (
            "spark.jars", "spark.jars.packages", "spark.driver.extraClassPath"))
        key = _fingerprint(jars, extra) if root and jars else None
        if key is not None:
            self.path = os.path.join(root, f"spark-driver-{key}.jsa")

    def _usable(self) -> bool:
        # A truncated archive crashes the JVM at start (not merely ignored): use only a file whose
        # size is the one recorded when it was moved into place.
        try:
            with open(self.path + ".size") as f:
                return int(f.read()) == os.path.getsize(self.path)
        except (OSError, ValueError):
            return False

    def java_options(self) -> str:
        """The JVM flags for this start: use the archive, or write it at exit if there is none yet."""
        if self.path is None:
            return ""
        if self._usable():
            self.in_use = True
            _touch(self.path)  # most recently used: kept when the folder is pruned
            return f"{QUIET} -XX:SharedArchiveFile={self.path} -Xshare:auto"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        except OSError:
            return ""
        # A per-process name, moved into place only once the JVM has exited cleanly: concurrent
        # first runs never see each other's half-written archive.
        self._tmp = f"{self.path}.{os.getpid()}.tmp"
        self.dumping = True
        return f"{QUIET} -XX:ArchiveClassesAtExit={self._tmp}"

    def discard(self) -> None:
        """Forget an archive the JVM could not start with; the next clean run writes a new one."""
        log.warning("the JVM did not start with the class-data archive %s; removed it", self.path)
        self.in_use = False
        for path in (self.path, self.path + ".size"):
            try:
                os.remove(path)
            except OSError:
                pass

    def finish(self, keep: bool = True, timeout: float = 180.0) -> bool:
        """After ``spark.stop()``: if this run writes the archive, end the JVM and keep the archive.

        Only the run that writes the archive ends its JVM here (the JVM writes it as it exits);
        other runs leave pyspark's gateway as pyspark does. ``keep=False`` (a failed or interrupted
        run) kills the JVM instead: nobody waits seconds for a cache on Ctrl-C. Writing the archive
        takes a few seconds on an idle machine, but measured 114 s at a load average of 20 on 2
        cores: ``timeout`` leaves room for that, or the archive would never be written there.
        """
        if not self.dumping:
            return False
        self.dumping = False
        from pyspark import SparkContext

        gateway = SparkContext._gateway
        proc = getattr(gateway, "proc", None)
        try:
            if gateway is not None:
                try:
                    gateway.shutdown()
                except Exception:
                    pass
                SparkContext._gateway = None
                SparkContext._jvm = None
            if proc is None:
                return False
            if not keep:
                proc.kill()
                proc.wait(timeout)
                return False
            proc.stdin.close()  # the gateway's JVM exits when its stdin closes
            proc.wait(timeout)
            size = os.path.getsize(self._tmp)
            if proc.returncode == 0 and size > 0:
                with open(self.path + ".size", "w") as f:
                    f.write(str(size))
                os.replace(self._tmp, self.path)
                prune(os.path.dirname(self.path))
                return True
        except Exception as exc:
            log.info("no JVM class-data archive this time: %s", exc)
            if proc is not None and proc.poll() is None:
                proc.kill()
        finally:
            if os.path.exists(self._tmp):
                os.remove(self._tmp)
        return False

def _touch(path: str) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


def prune(root: str, keep: int = KEEP) -> list[str]:
    """Remove all but the ``keep`` most recently used archives in ``root``, and dead dumps' files."""
    archives = sorted(glob.glob(os.path.join(root, "spark-driver-*.jsa")),
                      key=lambda p: os.path.getmtime(p) if os.path.exists(p) else 0, reverse=True)
    removed = []
    for path in archives[keep:]:
        for name in (path, path + ".size"):
            try:
                os.remove(name)
                removed.append(name)
            except OSError:
                pass
    now = time.time()
    for tmp in glob.glob(os.path.join(root, "spark-driver-*.tmp")):
        try:
            if now - os.path.getmtime(tmp) > STALE_TMP_SECONDS:
                os.remove(tmp)
                removed.append(tmp)
        except OSError:
            pass
    return removed


def fresh_jvm_class_cache(conf: dict) -> SparkClassCache | None:
    """A cache for the JVM this process is about to start; None if pyspark's gateway already runs."""
    from pyspark import SparkContext

    return SparkClassCache(conf) if SparkContext._gateway is None else None
