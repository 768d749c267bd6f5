"""Loaded by every Python process of a traced submit (``bench/bringup.py --timeline`` puts this
folder first on ``PYTHONPATH``, which pl_submit's children and Spark's Python workers inherit).
It does nothing unless ``ELEARN_TIMELINE`` names the trace file."""
import os

if os.environ.get("ELEARN_TIMELINE"):
    import bringup_trace

    bringup_trace.install(os.environ["ELEARN_TIMELINE"])
