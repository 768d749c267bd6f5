"""pl_submit's command line: every flag checked before anything starts, the help page, --version."""
import os
import subprocess
import time

import pytest
from conftest import PL_SUBMIT, job

from elearn.cluster.procs import free_port
from elearn.driver.options import option_fields


def test_help_lists_every_flag_in_spark_submit_style():
    for argv in (["--help"], ["-h"], ["job.py", "--ps", "1", "--help"]):
        out = subprocess.run(PL_SUBMIT + argv, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("Usage: pl_submit JOB_FILE [options]")
    text = out.stdout
    for f in option_fields():
        assert "  " + f.metadata["flag"].flag(f.name) in text, f.name
    assert "--register-timeout SECONDS" in text and "Default: 120." in text
    assert "--arg KEY=VALUE" in text
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
def test_bad_flags_are_refused_at_once_without_starting_anything(no_java, tmp_path, argv, message):
    """Checked against the options before fire calls anything: no JVM is started (the ``no_java``
    fixture's java would say so) and the answer comes within seconds."""
    out = _refused(no_java, tmp_path, [job("linear_fit.py"), *argv], within=5)
    assert message in out.stderr
    assert not (tmp_path / "home" / "apps").exists()


def _refused(env, tmp_path, argv, within=60.0):
    """Run pl_submit in ``env`` (the ``no_java`` fixture's: a JVM started fails the test); it must
    exit 2 within ``within`` seconds. Returns the run."""
    t0 = time.monotonic()
    out = subprocess.run(PL_SUBMIT + [str(a) for a in argv], capture_output=True, text=True,
                         timeout=120, env=env, cwd=tmp_path)
    assert time.monotonic() - t0 < within
    assert out.returncode == 2, out.stdout + out.stderr
    return out


def _one_line(out) -> str:
    """The whole output of a refused command: one line on stderr, nothing on stdout."""
    assert out.stdout == "", out.stdout
    lines = out.stderr.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("pl_submit: "), out.stderr
    return lines[0]


def _zip(path, names):
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.writestr(name, b"")
    return str(path)


# Checks that run once the options are read but before ZooKeeper, Spark or any job starts.
PRE_START = {
    "slots": (["--workers", 3, "--master", "local[2]"], "too few Spark slots"),
    "archive-local": (["--archives", "{env}", "--master", "local[2]"],
                      "--archives ships an environment to executors, but --master local[2]"),
    "venv-local": (["--venv", "{tmp}", "--master", "local[2]"], "--venv ships an environment"),
    "archive-missing": (["--archives", "{env},{tmp}/data.tar.gz", "--master", "local-cluster[1,1,1024]"],
                        "--archives {tmp}/data.tar.gz: no such file"),
    "shape": (["--ps", 1, "--worker-memory", "4g", "--master", "local-cluster[2,1,1024]"],
              "--worker-memory 4g: no worker of --master local-cluster[2,1,1024]"),
    "shape-value": (["--ps", 1, "--ps-memory", "lots", "--master", "local-cluster[2,1,1024]"],
                    "--ps-memory 'lots': use a JVM size"),
    "location": (["--checkpoint-dir", "{tmp}/afile/sub"], "--checkpoint-dir"),
    "zookeeper": (["--zk", "127.0.0.1:{port}/team"], "cannot reach ZooKeeper at '127.0.0.1:{port}'"),
}


@pytest.mark.parametrize("case", sorted(PRE_START))
def test_a_check_before_spark_prints_one_line_exits_2_and_leaves_no_directory(no_java, tmp_path, case):
    """Slots, archives, --venv with local Spark, shapes, locations and an external ZooKeeper are
    checked before anything starts: the error alone, once, exit 2 (a usage error), and no
    application directory."""
    argv, message = PRE_START[case]
    (tmp_path / "afile").write_text("a file, not a directory\n")
    env_zip = _zip(tmp_path / "env.zip", ["bin/python", "pyvenv.cfg"])
    port = free_port()
    fill = lambda v: str(v).format(tmp=tmp_path, env=env_zip, port=port)
    out = _refused(no_java, tmp_path, [job("linear_fit.py"), *map(fill, argv)])
    line = _one_line(out)
    assert fill(message) in line, line
    apps = tmp_path / "home" / "apps"
    assert not apps.exists() or not os.listdir(apps), os.listdir(apps)


def test_a_refused_rerun_keeps_the_directory_of_the_run_it_would_resume(no_java, tmp_path):
    """A directory that was there before (the same --app-name, to resume) is not removed."""
    kept = tmp_path / "home" / "apps" / "resume-me" / "checkpoints"
    kept.mkdir(parents=True)
    (kept / "checkpoint").write_text("model_checkpoint_path: \"ckpt-3\"\n")
    out = _refused(no_java, tmp_path, [job("linear_fit.py"), "--app-name", "resume-me", "--workers", 3,
                                 "--master", "local[2]"])
    assert "too few Spark slots" in _one_line(out)
    assert (kept / "checkpoint").exists()


def test_a_positional_key_value_is_pointed_to_arg(no_java, tmp_path):
    out = _refused(no_java, tmp_path, [job("linear_fit.py"), "epochs=3", "lr=0.1"], within=5)
    assert "job arguments are given as --arg epochs=3 --arg lr=0.1" in _one_line(out)


def test_spark_submit_spellings_c_and_verbose_are_taken(no_java, tmp_path):
    """-c is --conf and --verbose is --tf-log: a bad -c is refused as --conf is, and --verbose
    passes the flag check (the run then stops at the slot check, before anything starts)."""
    out = _refused(no_java, tmp_path, [job("linear_fit.py"), "-c", "spark.executor.memory"], within=5)
    assert "--conf 'spark.executor.memory' is not KEY=VALUE" in _one_line(out)
    out = _refused(no_java, tmp_path, [job("linear_fit.py"), "--verbose", "-c", "spark.task.cpus=2",
                                 "--workers", 2, "--master", "local[2]"])
    assert "spark.task.cpus 2" in _one_line(out)


@pytest.mark.parametrize("argv, message", [
    (["list", "--zkk", "x"], "list takes no flag --zkk: did you mean --zk?"),
    (["list", "extra"], "list takes no argument, got extra"),
    (["status"], "status takes APP"),
    (["kill", "app", "--timout", "5"], "kill takes no flag --timout: did you mean --timeout?"),
    (["kill", "app", "--timeout", "soon"], "--timeout must be a number, got 'soon'"),
    (["status", "app", "--zk"], "--zk needs a value"),
])
def test_list_status_kill_check_their_flags_like_the_main_command(no_java, tmp_path, argv, message):
    out = _refused(no_java, tmp_path, argv, within=5)
    line = _one_line(out)
    assert message in line and "Could not consume" not in line, line


def test_help_shows_every_default_which_options_take_uris_and_the_environment(tmp_path):
    import re

    from elearn.driver.options import ENVIRONMENT

    text = subprocess.run(PL_SUBMIT + ["--help"], capture_output=True, text=True, timeout=60).stdout
    entries, current = {}, None   # flag -> its help text, from the page's two-column layout
    for line in text.splitlines():
        if line.startswith("  --"):
            current = line.split()[0]
            entries[current] = " ".join(line.split()[2:]) if len(line) > 30 else ""
        elif line.startswith(" " * 30) and current:
            entries[current] += " " + line.strip()
        else:
            current = None
    assert "Default: 0" in entries["--ps"], entries["--ps"]
    for f in option_fields():
        if not str(f.type).startswith("bool"):
            assert "Default" in entries[f.metadata["flag"].flag(f.name)], f.name
    for flag in ("--checkpoint-dir", "--model-dir", "--work-dir"):
        assert f"{flag} PATH|URI" in text
    # Every variable elearn reads on the user's behalf is listed; the ones it sets for its own
    # processes are not the user's to set.
    internal = {"ELEARN_NODE", "ELEARN_TF_LOG", "ELEARN_TF_IMPORT_LOG", "ELEARN_CONFIG_TIMEOUT",
                "ELEARN_TEST_TAG"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    read = set()
    for folder, _, files in os.walk(os.path.join(root, "elearn")):
        for name in files:
            if name.endswith(".py"):
                code = open(os.path.join(folder, name)).read()
                read |= set(re.findall(r"environ(?:\.get)?[\[(]\s*[\"'](ELEARN_[A-Z_]+)", code))
    listed = " ".join(name for name, _ in ENVIRONMENT)
    assert read - internal and not {v for v in read - internal if v not in listed}, read
    assert "Environment variables:" in text and all(name in text for name, _ in ENVIRONMENT)
