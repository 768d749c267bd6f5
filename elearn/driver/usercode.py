"""The user's driver-side hooks (``pre_train``, ``post_train``), run so that ``pl_submit kill``
stops them and their errors keep the user's traceback."""
from __future__ import annotations

import contextlib
import threading

from elearn.cluster.registry import AppRegistry
from elearn.driver.console import Console
from elearn.driver.nodejobs import job_tag
from elearn.driver.sparkops import SparkOps
from elearn.errors import KilledError, UserCodeError


class UserCode:
    """Runs the user's code on the driver within one application."""

    def __init__(self, app_id: str, ops: SparkOps, registry: AppRegistry, console: Console):
        self.id, self.ops, self.registry, self.console = app_id, ops, registry, console

    def run(self, what: str, fn, *args):
        """Call the user's code on the driver; its exception becomes a UserCodeError that keeps
        the traceback.

        ``pl_submit kill`` meanwhile cancels the code's Spark jobs, so a long ``pre_train`` or
        ``post_train`` stops at its current Spark action instead of running to its end.
        """
        with self._cancel_spark_on_kill(what) as killed, self.ops.tagged(job_tag(self.id, what)):
            try:
                out = fn(*args)
            except Exception as exc:
                if killed.is_set():
                    raise KilledError(f"killed on request during {what} (its Spark jobs were "
                                      "cancelled)") from exc
                raise UserCodeError(f"{what} raised {exc.__class__.__name__}: {exc}") from exc
        if killed.is_set():
            raise KilledError(f"killed on request during {what}")
        return out

    @contextlib.contextmanager
    def _cancel_spark_on_kill(self, what: str, every: float = 0.5):
        """An Event set once a kill is requested; from then on, the Spark jobs ``what`` started
        are cancelled (again every ``every`` seconds: the user's code may start another) until the
        block ends. Other jobs of the session (the user's own) are left alone."""
        killed, done = threading.Event(), threading.Event()

        def keep_cancelling():
            while not done.is_set():
                self.ops.cancel(job_tag(self.id, what))
                done.wait(every)

        def on_change(data, _stat):
            if done.is_set():
                return False  # ends kazoo's watch
            if data is not None and not killed.is_set():
                killed.set()
                self.console.say("kill requested: cancelling the driver's Spark jobs")
                threading.Thread(target=keep_cancelling, name="elearn-kill", daemon=True).start()
            return None

        self.registry.client.DataWatch(f"{self.registry.base}/kill", on_change)
        try:
            yield killed
        finally:
            done.set()
