"""A Ctrl-C (or a notebook's stop button) that the driver cannot lose.

Python runs a signal's handler in the main thread between two bytecodes, wherever that thread is.
When that is inside a ``__del__`` or a weakref callback, the ``KeyboardInterrupt`` the handler
raises is printed as "Exception ignored" and dropped: the run goes on as if nobody had asked. The
driver's main thread spends its waits in exactly such company (py4j collects its Java objects with
weakref callbacks that talk to the JVM; kazoo and the node jobs' threads allocate all the while), so
one press in a hundred could be lost, and a user who pressed stop once sees a job that ignores it.
:class:`Interrupts` remembers the press besides raising it; the driver's waits, which poll anyway,
raise it again if it went missing.
"""
from __future__ import annotations

import signal
import threading


class Interrupts:
    """While entered in the main thread: SIGINT (and SIGTERM, where Python code handles it, as
    ``pl_submit`` does) is recorded, then handled as before (the handler raises
    ``KeyboardInterrupt``); :meth:`check` raises it again once one has been recorded."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._pressed = threading.Event()
        self._previous: dict = {}

    def __enter__(self) -> "Interrupts":
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may set handlers (and only it runs them)
        for signum in self.SIGNALS:
            previous = signal.getsignal(signum)
            if callable(previous):  # SIG_IGN and SIG_DFL (and handlers set outside Python) stay
                self._previous[signum] = previous
                signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def _on_signal(self, signum, frame) -> None:
        self._pressed.set()
        self._previous[signum](signum, frame)  # Python's, ipykernel's, pyspark's or pl_submit's
        raise KeyboardInterrupt  # in case that one returned

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a signal came while entered (its first raise may be lost)."""
        if self._pressed.is_set():
            raise KeyboardInterrupt("interrupted")
