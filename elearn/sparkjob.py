"""A Spark job run from a driver thread, so the driver can watch the cluster while it runs."""
from __future__ import annotations

import threading


class SparkJobThread(threading.Thread):
    """Runs ``body()`` (which collects a Spark job) under the application's job group ``role``.

    ``result`` holds what ``body`` returned, ``error`` what it raised; the driver's waits report
    either. ``app.close()`` joins these threads, and cancels their jobs if they do not end.
    """

    def __init__(self, app, role: str, body, description: str):
        super().__init__(name=f"elearn-{role}-job", daemon=True)
        self.app, self.role, self.body, self.description = app, role, body, description
        self.result, self.error = None, None

    def run(self):
        self.app.spark.sparkContext.setJobGroup(f"{self.app.id}-{self.role}", self.description,
                                                interruptOnCancel=True)
        try:
            self.result = self.body()
        except Exception as exc:  # reported by the driver's waits
            self.error = exc
