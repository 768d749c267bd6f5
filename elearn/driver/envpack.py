"""Python environments shipped to the executors: archive checks, packing at submit time, a cache.

Executors on a shared cluster rarely have the job's packages. Spark unpacks an archive listed in
``spark.archives`` into every executor's working directory; pointing ``spark.pyspark.python`` at the
interpreter inside it makes the executors' Python workers, and the TF processes they start (the
same ``sys.executable``), run in that environment::

    pl_submit job.py --master yarn --archives env.tar.gz      # packed beforehand
    pl_submit job.py --master yarn --venv ~/venvs/train       # packed now with venv-pack, cached
    pl_submit job.py --master yarn --conda-env train          # packed now with conda-pack, cached

Every check runs before the SparkSession starts, so a bad archive costs seconds, not a cluster
allocation.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass

from elearn.driver.options import elearn_home
from elearn.errors import ElearnError

ALIAS = "environment"
SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")  # what Spark's archive unpacking understands
EARLY_STOP_BYTES = 256 << 20
PACKERS = "conda-pack (conda_pack) or venv-pack (venv_pack)"


class EnvironmentArchiveError(ElearnError):
    """An environment archive or environment to pack is unusable; the message says how to fix it."""


@dataclass
class ShippedEnv:
    """An archive Spark ships to the executors, and what it was checked to contain."""

    archive: str
    alias: str = ALIAS
    kind: str = "unknown"            # "venv-pack", "conda-pack", "remote" (not listed) or "unknown"
    base_python: str | None = None   # venv-pack: the interpreter the archive's bin/python links to
    packed: bool = False             # packed by this submit (False: given, or found in the cache)
    others: tuple = ()               # more archives of --archives, "PATH#NAME", unpacked beside it

    @property
    def python(self) -> str:
        """The executors' interpreter, relative to their working directory."""
        return f"./{self.alias}/bin/python"

    def spark_conf(self, conf: dict | None = None) -> dict:
        """``spark.archives`` and the executors' Python for this environment, merged into ``conf``."""
        entry = ",".join([f"{self.archive}#{self.alias}", *self.others])
        existing = (conf or {}).get("spark.archives")
        return {"spark.archives": f"{existing},{entry}" if existing else entry,
                "spark.pyspark.python": self.python}


def _split_alias(spec: str) -> tuple[str, str]:
    path, _, alias = spec.partition("#")
    if path.startswith("file://"):
        path = path[len("file://"):]
    if _remote(path):
        return path, alias or ALIAS
    return os.path.abspath(os.path.expanduser(path)), alias or ALIAS


def _remote(path: str) -> bool:
    """hdfs://, s3a://, gs://, https:// ...: Spark fetches it; the submitting host cannot list it."""
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme.isalnum() and scheme != "file"


def _clean(name: str) -> str:
    return name[2:] if name.startswith("./") else name


def _new_scan() -> dict:
    return {"names": set(), "links": {}}


def _note(found: dict, name: str, link: str | None) -> None:
    name = _clean(name)
    if name.startswith("bin/python") or name in ("bin/conda-unpack", "pyvenv.cfg"):
        found["names"].add(name)
        if link:
            found["links"][name] = link


def _resolved(found: dict) -> bool:
    """bin/python is known and its link chain ends outside the archive or at a file in it."""
    name = "bin/python"
    for _ in range(8):
        if name not in found["names"]:
            return False
        link = found["links"].get(name)
        if link is None or os.path.isabs(link):
            return True
        name = os.path.normpath(os.path.join("bin", link))
    return False


def _scan_tar(path: str) -> dict:
    """Member facts from ``tar -t`` at C speed, stopping once bin/python is resolved.

    A packed TensorFlow environment is gigabytes; listing all of it can take half a minute.
    """
    tar = shutil.which("tar")
    if tar is None:
        return _scan_tar_python(path)
    found = _new_scan()
    # Small archives are listed whole (their kind is known for sure); big ones only up to bin/python.
    early = os.path.getsize(path) > EARLY_STOP_BYTES
    proc = subprocess.Popen([tar, "-tvf", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace")
    stopped = False
    try:
        for line in proc.stdout:
            # "lrwxrwxrwx user/group 0 2024-01-01 12:00 bin/python -> python3"
            parts = line.rstrip("\n").split(None, 5)
            if len(parts) == 6:
                name, _, link = parts[5].partition(" -> ")
                _note(found, name, link or None)
                if early and _clean(name).startswith("bin/python") and _resolved(found):
                    stopped = True
                    proc.kill()
                    break
    finally:
        proc.stdout.close()
        err = proc.stderr.read()
        proc.stderr.close()
        proc.wait()
    if not stopped and proc.returncode != 0 and not found["names"]:
        raise EnvironmentArchiveError(f"--archives {path}: tar cannot read it ({err.strip()[:200]})")
    return found


def _scan_tar_python(path: str) -> dict:
    found = _new_scan()
    with tarfile.open(path) as tf:
        for m in tf:
            _note(found, m.name, m.linkname if m.issym() else None)
    return found


def _base_python(found: dict) -> str | None:
    """Follow bin/python's links inside the archive to the interpreter outside it, if any."""
    name = "bin/python"
    for _ in range(8):
        link = found["links"].get(name)
        if link is None:
            return None
        if os.path.isabs(link):
            return link
        name = os.path.normpath(os.path.join("bin", link))
    return None


def check_archive(spec: str, cache: str | None = None) -> ShippedEnv:
    """Check that ``spec`` (``PATH[#ALIAS]``) is an archive Spark can ship holding ``bin/python``.

    Raises ``EnvironmentArchiveError`` naming the problem and the fix. A good result is remembered
    in ``cache`` by path, size and modification time, so the same archive is listed only once.
    """
    path, alias = _split_alias(spec)
    if _remote(path):
        if not path.endswith(SUFFIXES):
            raise EnvironmentArchiveError(f"--archives {path}: Spark unpacks only "
                                          f"{', '.join(SUFFIXES)} archives")
        return ShippedEnv(path, alias, "remote")
    memo = None
    if cache and os.path.isfile(path):
        st = os.stat(path)
        key = hashlib.sha256(f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:24]
        memo = os.path.join(cache, "checked", key + ".json")
        if os.path.isfile(memo):
            with open(memo) as f:
                facts = json.load(f)
            return ShippedEnv(path, alias, facts["kind"], facts["base_python"])
    env = _check_archive(path, alias)
    if memo:
        os.makedirs(os.path.dirname(memo), exist_ok=True)
        with open(memo, "w") as f:
            json.dump({"kind": env.kind, "base_python": env.base_python}, f)
    return env


def _check_archive(path: str, alias: str) -> ShippedEnv:
    if not os.path.exists(path):
        raise EnvironmentArchiveError(
            f"--archives {path}: no such file. Pack an environment with {PACKERS}, or let "
            "pl_submit pack one with --venv PATH or --conda-env NAME_OR_PREFIX.")
    if not os.path.isfile(path):
        raise EnvironmentArchiveError(f"--archives {path}: not a file (to pack a directory use "
                                      "--venv PATH or --conda-env PREFIX)")
    if not path.endswith(SUFFIXES):
        raise EnvironmentArchiveError(
            f"--archives {path}: Spark unpacks only {', '.join(SUFFIXES)} archives; "
            "pack with an output name ending in .tar.gz")
    if path.endswith(".zip"):
        if not zipfile.is_zipfile(path):
            raise EnvironmentArchiveError(f"--archives {path}: not a zip archive (is the download "
                                          f"complete?). Re-pack it with {PACKERS}.")
        found = _new_scan()
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                _note(found, name, None)
    else:
        if not tarfile.is_tarfile(path):
            raise EnvironmentArchiveError(f"--archives {path}: not a tar archive (is the download "
                                          f"complete?). Re-pack it with {PACKERS}.")
        found = _scan_tar(path)
    names = found["names"]
    if "bin/python" not in names:
        raise EnvironmentArchiveError(
            f"--archives {path}: no bin/python at the top of the archive, so executors would have "
            f"no interpreter. Pack the environment's root directory with {PACKERS} "
            "(their archives hold bin/python at the top).")
    kind = ("conda-pack" if "bin/conda-unpack" in names
            else "venv-pack" if "pyvenv.cfg" in names or _base_python(found) else "unknown")
    return ShippedEnv(path, alias, kind, _base_python(found))


# -- packing at submit time ---------------------------------------------------------------------

def fingerprint(prefix: str) -> str:
    """A hash of every file's relative path, size, modification time and link target.

    Installing, upgrading or removing a package changes it; reading the environment does not.
    Hashing gigabytes of bytes on every submit would cost more than the cache saves.
    """
    h = hashlib.sha256()
    for root, dirs, files in os.walk(prefix):
        dirs.sort()
        if "__pycache__" in dirs:  # byte-code is rewritten by merely running the environment
            dirs.remove("__pycache__")
        for name in sorted(files):
            full = os.path.join(root, name)
            rel = os.path.relpath(full, prefix)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            link = os.readlink(full) if os.path.islink(full) else ""
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{link}\n".encode())
    return h.hexdigest()


def cache_dir(home: str | None = None) -> str:
    return os.path.join(home or elearn_home(), "envs")


def _cached_pack(kind: str, prefix: str, label: str, pack_fn, cache: str, say) -> ShippedEnv:
    digest = fingerprint(prefix)[:16]
    os.makedirs(cache, exist_ok=True)
    target = os.path.join(cache, f"{kind}-{label}-{digest}.tar.gz")
    facts = target + ".json"
    base = None
    if kind == "venv-pack":
        base = os.path.realpath(os.path.join(prefix, "bin", "python"))
    if os.path.isfile(target) and os.path.isfile(facts):
        say(f"environment {prefix} unchanged since it was packed; reusing {target}")
        return ShippedEnv(target, ALIAS, kind, base, packed=False)
    say(f"packing {prefix} with {kind} (cached by content in {cache})")
    fd, tmp = tempfile.mkstemp(prefix=f".{kind}-", suffix=".tar.gz", dir=cache)
    os.close(fd)
    try:
        pack_fn(tmp)
        os.replace(tmp, target)  # concurrent submits: the last complete archive wins, none is torn
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    with open(facts, "w") as f:
        json.dump({"prefix": prefix, "kind": kind, "fingerprint": digest, "base_python": base}, f)
    return ShippedEnv(target, ALIAS, kind, base, packed=True)


def pack_level() -> int:
    """gzip level of archives packed at submit time: ``ELEARN_PACK_LEVEL`` (0-9), default 1.

    0 packs a TensorFlow environment several times faster into an archive about 3x bigger.
    """
    raw = os.environ.get("ELEARN_PACK_LEVEL", "1")
    if not raw.isdigit() or int(raw) > 9:
        raise EnvironmentArchiveError(f"ELEARN_PACK_LEVEL={raw!r}: use a gzip level from 0 to 9")
    return int(raw)


def pack_venv(path: str, cache: str | None = None, say=lambda msg: None) -> ShippedEnv:
    """Pack the virtualenv at ``path`` with venv-pack, or reuse the cached archive of the same content."""
    prefix = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(os.path.join(prefix, "bin", "python")):
        raise EnvironmentArchiveError(f"--venv {prefix}: no bin/python there; pass the virtualenv's "
                                      "root directory (the one holding bin/ and lib/)")
    try:
        import venv_pack
    except ImportError as exc:
        raise EnvironmentArchiveError("--venv needs venv-pack: pip install venv-pack") from exc

    def pack(out):
        try:
            venv_pack.pack(prefix=prefix, output=out, format="tar.gz", force=True,
                           compress_level=pack_level())
        except venv_pack.VenvPackException as exc:
            raise EnvironmentArchiveError(f"--venv {prefix}: venv-pack refused it: {exc}. Install "
                                          "the packages non-editable (pip install ., not -e) in a "
                                          "venv created without --system-site-packages.") from exc

    label = os.path.basename(prefix.rstrip(os.sep)) or "venv"
    return _cached_pack("venv-pack", prefix, label, pack, cache or cache_dir(), say)


def conda_prefix(name_or_prefix: str) -> str:
    """The prefix of a conda environment given by path or by name (names need ``conda`` on PATH)."""
    candidate = os.path.abspath(os.path.expanduser(name_or_prefix))
    if os.sep in name_or_prefix or os.path.isdir(candidate):
        if not os.path.isdir(os.path.join(candidate, "conda-meta")):
            raise EnvironmentArchiveError(
                f"--conda-env {candidate}: not a conda environment (no conda-meta/ inside); pass "
                "the prefix printed by `conda env list`, or use --venv for a virtualenv")
        return candidate
    conda = os.environ.get("CONDA_EXE") or shutil.which("conda")
    if not conda:
        raise EnvironmentArchiveError(
            f"--conda-env {name_or_prefix}: conda is not on PATH, so the name cannot be resolved; "
            "pass the environment's prefix path instead (conda env list shows it)")
    out = subprocess.run([conda, "env", "list", "--json"], capture_output=True, text=True, timeout=120)
    envs = json.loads(out.stdout or "{}").get("envs", [])
    for prefix in envs:
        if os.path.basename(prefix) == name_or_prefix:
            return prefix
    raise EnvironmentArchiveError(f"--conda-env {name_or_prefix}: no conda environment of that name "
                                  f"(known: {', '.join(os.path.basename(p) for p in envs) or 'none'})")


def pack_conda(name_or_prefix: str, cache: str | None = None, say=lambda msg: None) -> ShippedEnv:
    """Pack a conda environment with conda-pack, or reuse the cached archive of the same content."""
    prefix = conda_prefix(name_or_prefix)
    try:
        import conda_pack
    except ImportError as exc:
        raise EnvironmentArchiveError("--conda-env needs conda-pack: pip install conda-pack") from exc

    def pack(out):
        try:
            conda_pack.pack(prefix=prefix, output=out, format="tar.gz", force=True,
                            compress_level=pack_level(), n_threads=-1)
        except conda_pack.CondaPackException as exc:
            raise EnvironmentArchiveError(f"--conda-env {prefix}: conda-pack refused it: {exc}") from exc

    label = os.path.basename(prefix.rstrip(os.sep)) or "conda"
    return _cached_pack("conda-pack", prefix, label, pack, cache or cache_dir(), say)


def other_archive(spec: str) -> str:
    """``PATH#NAME`` of an archive of ``--archives`` after the environment: Spark unpacks it into
    every executor's working directory as ``NAME`` (default: the file's name), as spark-submit's
    ``--archives`` does. A local one must exist and be of a kind Spark unpacks."""
    path, _, alias = spec.partition("#")
    if path.startswith("file://"):
        path = path[len("file://"):]
    if not path.endswith(SUFFIXES):
        raise EnvironmentArchiveError(f"--archives {path}: Spark unpacks only {', '.join(SUFFIXES)} archives")
    if not _remote(path):
        path = os.path.abspath(os.path.expanduser(path))
        if not os.path.isfile(path):
            raise EnvironmentArchiveError(f"--archives {path}: no such file")
    return f"{path}#{alias or os.path.basename(path)}"


def resolve_environment(archives: str | None, conda_env: str | None, venv: str | None,
                        master: str, say=lambda msg: None, home: str | None = None) -> ShippedEnv | None:
    """The environment to ship for these options, checked (and packed if asked); None for none.

    ``archives`` is a comma-separated list, as spark-submit takes it: the first is the environment,
    the others are unpacked beside it (``other_archive``)."""
    given = [f for f, v in (("--archives", archives), ("--conda-env", conda_env), ("--venv", venv)) if v]
    if not given:
        return None
    if len(given) > 1:
        raise EnvironmentArchiveError(f"{' and '.join(given)} both name the executors' environment; "
                                      "give only one")
    if master.startswith("local") and not master.startswith("local-cluster"):
        raise EnvironmentArchiveError(
            f"{given[0]} ships an environment to executors, but --master {master} runs everything "
            "in this process's interpreter. Drop the flag, or use --master local-cluster[N,C,MB], "
            "spark://..., yarn or k8s://...")
    specs = [a.strip() for a in (archives or "").split(",") if a.strip()]
    if archives:
        env = check_archive(specs[0], cache_dir(home))
        env.others = tuple(other_archive(a) for a in specs[1:])
    elif venv:
        env = pack_venv(venv, cache_dir(home), say)
    else:
        env = pack_conda(conda_env, cache_dir(home), say)
    if env.kind == "remote":
        say(f"environment {env.archive} ships as ./{env.alias} (remote: Spark fetches it; its "
            "contents are not checked here)")
    elif env.kind == "venv-pack" and env.base_python:
        say(f"environment {env.archive} (venv-pack): executors need {env.base_python} at that "
            "path on every host")
    else:
        say(f"environment {env.archive} ({env.kind}) ships as ./{env.alias}")
    for entry in env.others:
        path, _, alias = entry.rpartition("#")
        say(f"archive {path} ships as ./{alias}")
    return env


__all__ = ["ShippedEnv", "EnvironmentArchiveError", "check_archive", "pack_venv", "pack_conda",
           "resolve_environment", "fingerprint"]
