"""pl_submit's command line: every flag checked before anything starts, the help page, --version."""
import os
import stat
import subprocess
import time

import pytest
from conftest import PL_SUBMIT, job

from elearn.config import option_fields


def test_help_lists_every_flag_in_spark_submit_style():
    for argv in (["--help"], ["-h"], ["job.py", "--ps", "1", "--help"]):
        out = subprocess.run(PL_SUBMIT + argv, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("Usage: pl_submit JOB_FILE [options]")
    text = out.stdout
    for f in option_fields():
        assert "  " + f.metadata["flag"].flag(f.name) in text, f.name
    assert "--register-timeout SECONDS" in text and "(default: 120)" in text
    assert "--arg KEY=VALUE" in text and "--runtime tf " in text
    assert "horovod" not in text  # offered nowhere as a working choice
    assert "Type:" not in text  # not fire's generated page
    bare = subprocess.run(PL_SUBMIT, capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and bare.stdout.startswith("Usage: pl_submit")


def test_version_names_elearn_spark_and_tensorflow():
    from importlib.metadata import version

    out = subprocess.run(PL_SUBMIT + ["--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"elearn {version('elearn')}" in out.stdout
    assert f"Spark (pyspark) {version('pyspark')}" in out.stdout
    assert f"TensorFlow {version('tensorflow')}" in out.stdout


@pytest.mark.parametrize("argv, message", [
    (["--ps", "1", "--worker", "2"], "unknown flag --worker: did you mean --workers?"),
    (["--num-executors", "3"], "unknown flag --num-executors: pl_submit takes it as --conf spark.executor.instances=N"),
    (["--ps"], "--ps needs a value (--ps N)"),
    (["--ps", "--workers", "2"], "--ps needs a value (--ps N)"),
    (["--ps", "two"], "--ps must be a whole number, got 'two'"),
    (["--register-timeout", "soon"], "--register-timeout must be a number, got 'soon'"),
    (["--tf-log=maybe"], "--tf-log must be true or false, got 'maybe'"),
    (["--conf", "spark.executor.memory"], "--conf 'spark.executor.memory' is not KEY=VALUE"),
])
def test_bad_flags_are_refused_at_once_without_starting_anything(tmp_path, argv, message):
    """Checked against the options before fire calls anything: no JVM is started (a java on
    PATH that records being run would say so) and the answer comes within seconds."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "java-was-run"
    fake = bin_dir / "java"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", ELEARN_HOME=str(tmp_path / "home"))
    t0 = time.monotonic()
    out = subprocess.run(PL_SUBMIT + [job("linear_fit.py"), *argv], capture_output=True, text=True,
                         timeout=60, env=env, cwd=tmp_path)
    assert time.monotonic() - t0 < 5
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr
    assert not marker.exists(), "a JVM was started"
    assert not (tmp_path / "home" / "apps").exists()
