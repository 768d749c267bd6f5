"""Waiting with a deadline: every wait in elearn ends, with an error that says what was missing."""
from __future__ import annotations

import time
from typing import Callable


def wait_until(check: Callable[[], object], timeout: float, interval: float = 0.2,
               on_timeout: Callable[[], Exception] | None = None, on_poll: Callable[[], None] | None = None):
    """Poll ``check`` until it returns something truthy; raise ``on_timeout()`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if on_poll is not None:
            on_poll()
        if time.monotonic() > deadline:
            raise on_timeout() if on_timeout else TimeoutError(f"timed out after {timeout:.0f}s")
        time.sleep(interval)


FOREVER = 3600 * 24 * 365  # a wait that another condition (the application's end) always ends first
