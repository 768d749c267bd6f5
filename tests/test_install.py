"""Installing elearn keeps the pyspark already there: the cluster's Spark decides the client's
pyspark, and a platform's own must never be replaced (CI runs this on each supported pyspark)."""
import json
import subprocess
import sys

import pyspark
from conftest import ROOT


def test_installing_elearn_leaves_the_installed_pyspark_in_place(tmp_path):
    report = tmp_path / "report.json"
    # A dry run resolved against this environment alone: what pip would install or replace.
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index",
                           "--no-build-isolation", "--report", str(report), "-e", ROOT],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    would = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    assert set(would) == {"elearn"}, f"pip would also install {would} over pyspark {pyspark.__version__}"
