"""pl_submit's own help page: spark-submit style, every flag of the CLI on it, hyphenated."""
import inspect
import subprocess

from conftest import PL_SUBMIT

from plsubmit.cli import run


def test_help_lists_every_flag_in_spark_submit_style():
    for argv in (["--help"], ["-h"], ["job.py", "--ps", "1", "--help"]):
        out = subprocess.run(PL_SUBMIT + argv, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("Usage: pl_submit JOB_FILE [options]")
    text = out.stdout
    for name in inspect.signature(run).parameters:
        if name != "job_file":
            assert f"  --{name.replace('_', '-')}" in text, name
    assert "--register-timeout SECONDS" in text and "(default: 120)" in text
    assert "Type:" not in text  # not fire's generated page
    bare = subprocess.run(PL_SUBMIT, capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and bare.stdout.startswith("Usage: pl_submit")
