"""Code that travels with the job: ``--py-files`` and the job file's own folder.

A job file that imports its neighbours (``from fm_model import FM``) works on the driver because
the folder is on the driver's disk; on an executor of another host it exists only if shipped. As
``spark-submit --py-files`` does, every ``.py``, ``.zip`` and ``.egg`` given is added with Spark's
own mechanism (``addPyFile``; ``addArtifacts(pyfile=True)`` on Spark Connect), which puts it on the
import path of every Python worker, and so of the TF processes they start (their ``PYTHONPATH`` is
the worker's). A package directory is zipped first, under its own name. The job's folder is zipped
too: its ``.py`` files only, without hidden folders, ``__pycache__`` or virtualenvs, and at most
``MAX_FILES`` of them (a job file saved in a home directory must not ship the whole home).
"""
from __future__ import annotations

import os
import zipfile

from elearn.errors import JobError

MAX_FILES = 2000
SUFFIXES = (".py", ".zip", ".egg")


def parse_py_files(value: str | None) -> list[str]:
    """``--py-files a.py,lib.zip,pkg/``: absolute paths, each checked to exist and be shippable."""
    out = []
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        path = os.path.abspath(os.path.expanduser(item))
        if not os.path.exists(path):
            raise JobError(f"--py-files {item}: no such file or directory")
        if os.path.isfile(path) and not path.endswith(SUFFIXES):
            raise JobError(f"--py-files {item}: ship .py, .zip or .egg files, or a package directory")
        out.append(path)
    return out


def import_roots(paths: list[str]) -> list[str]:
    """Where Python imports ``paths`` from on this host: a package directory's parent, a module's
    folder, an archive itself (what spark-submit puts on the driver's path)."""
    roots = []
    for path in paths:
        root = os.path.dirname(path.rstrip(os.sep)) if os.path.isdir(path) or path.endswith(".py") else path
        if root not in roots:
            roots.append(root)
    return roots


def ship_py_files(ops, py_files: str | None, job_folders: list[str], into: str, single_host: bool) -> tuple:
    """Put ``--py-files`` (and, on a cluster, the job's own folder) on every node's import path
    through Spark (``ops``: ``elearn.driver.sparkops.SparkOps``); returns where the driver imports
    ``--py-files`` from."""
    paths = parse_py_files(py_files)
    files = bundle(paths, job_folders[0] if job_folders and not single_host else None, into)
    if files:
        ops.add_py_files(files)
    return tuple(import_roots(paths))


def bundle(paths: list[str], job_folder: str | None, into: str) -> list[str]:
    """The files to add to Spark for ``paths`` and the job's folder: directories zipped into ``into``."""
    out = []
    for path in paths:
        if os.path.isdir(path):
            name = os.path.basename(path.rstrip(os.sep))
            out.append(_zip(path, os.path.join(into, f"{name}.zip"), prefix=name))
        else:
            out.append(path)
    if job_folder and os.path.isdir(job_folder):
        out.append(_zip(job_folder, os.path.join(into, "job-folder.zip"), prefix=""))
    return out


def _zip(folder: str, target: str, prefix: str) -> str:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    count = 0
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__"
                             and not os.path.exists(os.path.join(root, d, "pyvenv.cfg")))
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                count += 1
                if count > MAX_FILES:
                    raise JobError(f"{folder} holds more than {MAX_FILES} .py files: too many to ship "
                                   "as the job's folder; put the job file in a folder of its own and "
                                   "ship libraries with --py-files")
                full = os.path.join(root, name)
                zf.write(full, os.path.join(prefix, os.path.relpath(full, folder)))
    return target
