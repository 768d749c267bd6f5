"""What the user sees while an application runs.

On a terminal, lines are styled with rich and waits show a live status line; elsewhere (CI, log
files, a notebook without a terminal) every message is a plain timestamped line, and repeated
progress for the same thing is printed at most every few seconds.
"""
from __future__ import annotations

import sys
import threading
import time

from rich.markup import escape


def _is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


class Console:
    def __init__(self, quiet: bool = False, live: bool | None = None, interval: float = 5.0):
        self.quiet = quiet
        self.live = _is_terminal() if live is None else live
        self.interval = interval
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        self._rich = None
        self._status = None
        if self.live and not quiet:
            try:
                from rich.console import Console as RichConsole

                self._rich = RichConsole(highlight=False)
            except ImportError:
                self.live = False

    def say(self, msg: str) -> None:
        """A line worth keeping: phases, results, failures."""
        if self.quiet:
            return
        with self._lock:
            if self._rich is not None:
                # The message is text, not markup: "[b]" or "[/x]" in it must print as written.
                self._rich.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] [bold cyan]elearn[/] {escape(msg)}")
            else:
                print(time.strftime("[elearn %H:%M:%S] ") + msg, flush=True)

    def progress(self, key: str, msg: str, force: bool = False) -> None:
        """Progress of a long wait; on a terminal a live status line, else throttled lines."""
        if self.quiet:
            return
        if self._rich is not None:
            with self._lock:
                if self._status is None:
                    self._status = self._rich.status(escape(msg))
                    self._status.start()
                else:
                    self._status.update(escape(msg))
            return
        now = time.monotonic()
        if force or now - self._last.get(key, 0.0) >= self.interval:
            self._last[key] = now
            self.say(msg)

    def done(self) -> None:
        """End a live status line (no-op for plain output)."""
        with self._lock:
            if self._status is not None:
                self._status.stop()
                self._status = None
