"""Environment archives: checks that fail before Spark starts, and packing cached by content.

Shipping a packed TensorFlow environment to real executors and proving the TF nodes ran inside it
is in test_multihost.py, with the FM example's cluster command (it needs a cluster with executors).
"""
import io
import os
import subprocess
import sys
import tarfile
import time
import zipfile

import pytest
from conftest import job, only_java
from envbuild import base_python

from elearn.driver.envpack import (EnvironmentArchiveError, check_archive, pack_conda, pack_venv,
                            resolve_environment)


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return str(path)


def _not_an_archive(tmp_path):
    path = tmp_path / "env.tar.gz"
    path.write_bytes(b"<html>403 Forbidden</html>\n")
    return str(path)


def _no_python(tmp_path):
    return _tar(tmp_path / "env.tar.gz", {"lib/python3.11/site-packages/x.py": b"x = 1\n"})


BAD = [
    (lambda p: str(p / "nope.tar.gz"), "no such file"),
    (_not_an_archive, "not a tar archive"),
    (_no_python, "no bin/python at the top of the archive"),
    (lambda p: _tar(p / "env.tar.xz", {"bin/python": b""}), "Spark unpacks only .tar.gz"),
]


@pytest.mark.parametrize("make,message", BAD, ids=["missing", "not-archive", "no-python", "suffix"])
def test_bad_archive_is_refused_with_its_fix(tmp_path, make, message):
    with pytest.raises(EnvironmentArchiveError) as err:
        check_archive(make(tmp_path))
    assert message in str(err.value)


def test_bad_archive_fails_before_any_spark_job(pl_submit, no_java, tmp_path):
    """Refused before anything starts: neither Spark nor ZooKeeper (both JVMs; no_java checks)."""
    archive = _no_python(tmp_path)
    t0 = time.monotonic()
    run = pl_submit(job("linear_fit.py"), "--ps", 1, "--workers", 1, "--archives", archive,
                    "--master", "local-cluster[1,2,1024]", timeout=120, env=only_java(no_java))
    assert run.returncode != 0
    assert f"--archives {archive}: no bin/python at the top of the archive" in run.stderr
    assert time.monotonic() - t0 < 60


def test_archive_check_reads_both_layouts_and_refuses_local_mode(tmp_path):
    zpath = tmp_path / "env.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("bin/python", b"")
        zf.writestr("pyvenv.cfg", b"home = /usr/bin\n")
    env = check_archive(f"{zpath}#py")
    assert (env.kind, env.alias, env.python) == ("venv-pack", "py", "./py/bin/python")
    assert env.spark_conf({"spark.archives": "a.zip#a"}) == {
        "spark.archives": f"a.zip#a,{zpath}#py", "spark.pyspark.python": "./py/bin/python"}
    remote = check_archive("hdfs:///envs/train.tar.gz")  # Spark fetches it; nothing to list here
    assert (remote.kind, remote.archive) == ("remote", "hdfs:///envs/train.tar.gz")
    with pytest.raises(EnvironmentArchiveError, match="Spark unpacks only"):
        check_archive("s3a://bucket/env.rpm")
    with pytest.raises(EnvironmentArchiveError, match=r"--master local\[4\] runs everything"):
        resolve_environment(str(zpath), None, None, "local[4]")
    with pytest.raises(EnvironmentArchiveError, match="give only one"):
        resolve_environment(str(zpath), None, str(tmp_path), "yarn")


def test_venv_is_packed_once_and_again_only_after_a_change(tmp_path):
    venv = tmp_path / "small"
    subprocess.run([base_python(), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    cache, said = str(tmp_path / "cache"), []
    first = pack_venv(str(venv), cache, said.append)
    assert first.packed and first.kind == "venv-pack"
    assert first.base_python == os.path.realpath(base_python())
    stamp = os.stat(first.archive).st_mtime_ns
    again = pack_venv(str(venv), cache, said.append)
    assert not again.packed and again.archive == first.archive
    assert os.stat(first.archive).st_mtime_ns == stamp  # not rewritten
    assert any("unchanged since it was packed" in s for s in said)
    # Installing something changes the content: a new archive, which holds the new file.
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "added_module.py").write_text("VALUE = 1\n")
    changed = pack_venv(str(venv), cache, said.append)
    assert changed.packed and changed.archive != first.archive
    with tarfile.open(changed.archive) as tf:
        names = tf.getnames()
    assert "bin/python" in names and any(n.endswith("site-packages/added_module.py") for n in names)
    assert check_archive(changed.archive).base_python == os.path.realpath(base_python())


def test_editable_venv_is_refused_with_the_fix(tmp_path):
    venv = tmp_path / "dev"
    subprocess.run([base_python(), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "__editable__.mine.pth").write_text("/somewhere/src\n")
    with pytest.raises(EnvironmentArchiveError, match=r"pip install \., not -e"):
        pack_venv(str(venv), str(tmp_path / "cache"))


def test_conda_pack_path_as_far_as_it_runs_here(tmp_path, monkeypatch):
    """conda cannot be installed here, so no environment made by conda exists on this machine.

    Covered: name and prefix resolution errors, a real conda-pack run on a prefix with conda's
    metadata directory (conda-pack packs it, with its conda-unpack script), the content cache, and
    the archive check recognising a conda-pack archive. Not covered: packing an environment that
    conda created and running executors from it (relocation by conda-unpack included).
    """
    monkeypatch.delenv("CONDA_EXE", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EnvironmentArchiveError, match="conda is not on PATH"):
        pack_conda("train-env", str(tmp_path / "cache"))
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(EnvironmentArchiveError, match="not a conda environment"):
        pack_conda(str(plain), str(tmp_path / "cache"))
    prefix = tmp_path / "condaenv"
    (prefix / "conda-meta").mkdir(parents=True)
    (prefix / "conda-meta" / "history").write_text("")
    (prefix / "bin").mkdir()
    os.symlink(os.path.realpath(sys.executable), prefix / "bin" / "python")
    first = pack_conda(str(prefix), str(tmp_path / "cache"))
    assert first.packed and first.kind == "conda-pack"
    assert check_archive(first.archive).kind == "conda-pack"  # bin/conda-unpack inside
    again = pack_conda(str(prefix), str(tmp_path / "cache"))
    assert not again.packed and again.archive == first.archive


def test_environment_definitions_pin_every_runtime_dependency_within_the_projects_ranges():
    """envs/ is what users build cluster environments from: it must not drift from pyproject."""
    import re
    import tomllib

    from packaging.requirements import Requirement

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        wanted = [Requirement(r) for r in tomllib.load(f)["project"]["dependencies"]]
    text = open(os.path.join(root, "envs", "requirements.txt")).read()
    venv_pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", text, re.M))
    conda = open(os.path.join(root, "envs", "environment.yml")).read()
    conda_pins = dict(re.findall(r"^\s+- ([A-Za-z0-9_.-]+)==?([0-9][^\s#]*)", conda, re.M))
    for req in wanted:
        for where, pins in (("requirements.txt", venv_pins), ("environment.yml", conda_pins)):
            assert req.name in pins, f"{req.name} is not pinned in envs/{where}"
            assert req.specifier.contains(pins[req.name]), (where, req, pins[req.name])


def _pins():
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(root, "envs", "requirements.txt")).read()
    venv_pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", text, re.M))
    conda = open(os.path.join(root, "envs", "environment.yml")).read()
    conda_pins = dict(re.findall(r"^\s+- ([A-Za-z0-9_.-]+)==?([0-9][^\s#]*)", conda, re.M))
    return root, venv_pins, conda_pins


def test_environment_definitions_agree_with_each_other_and_with_a_fresh_install():
    """envs/requirements.txt is the one list of pins: environment.yml and envs/Dockerfile (shown
    in docs/environments.md) must say the same, and a fresh install of elearn resolves exactly
    them, so that executors built from envs/ run what the driver runs (the same pyspark above all)."""
    import re
    from importlib.metadata import version

    root, venv_pins, conda_pins = _pins()
    for name, pin in conda_pins.items():
        if name in venv_pins:
            assert pin == venv_pins[name], f"envs/environment.yml pins {name} {pin}, requirements.txt {venv_pins[name]}"
    missing = set(venv_pins) - set(conda_pins)
    assert not missing, f"not in envs/environment.yml: {missing}"
    dockerfile = open(os.path.join(root, "envs", "Dockerfile")).read()
    (spark,) = re.findall(r"^ARG SPARK_VERSION=(\S+)$", dockerfile, re.M)
    assert spark == venv_pins["pyspark"], f"envs/Dockerfile builds Spark {spark}; pyspark is pinned {venv_pins['pyspark']}"
    docs = open(os.path.join(root, "docs", "environments.md")).read()
    assert "```dockerfile\n" + dockerfile + "```" in docs, "docs/environments.md shows another Dockerfile"

    line = lambda v: tuple(int(p) for p in v.split(".")[:2])
    installed = version("pyspark")
    if line(installed) < line(venv_pins["pyspark"]):
        pytest.skip(f"this suite runs on the older line pyspark {installed} on purpose; envs/ pin the newest")
    assert installed == venv_pins["pyspark"], (
        f"a fresh install resolves pyspark {installed}; envs/requirements.txt, environment.yml and "
        f"Dockerfile pin {venv_pins['pyspark']}: pin {installed} in all three")
    stale = {name: (pin, version(name)) for name, pin in venv_pins.items() if version(name) != pin}
    assert not stale, f"pinned (envs/) vs installed: {stale}; pin what a fresh install resolves"
