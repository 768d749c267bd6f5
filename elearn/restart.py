"""The restart policy: how many times, how soon, and a tally of why."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class RestartPolicy:
    """``max_restarts`` restarts with exponential backoff (``backoff`` s, doubling, capped)."""

    max_restarts: int = 3
    backoff: float = 1.0
    max_backoff: float = 30.0
    restarts: int = 0
    causes: Counter = field(default_factory=Counter)

    def next_delay(self, cause: str) -> float | None:
        """Count a restart for ``cause``; the delay before it, or None when restarts are exhausted."""
        if self.restarts >= self.max_restarts:
            return None
        delay = min(self.max_backoff, self.backoff * (2 ** self.restarts))
        self.restarts += 1
        self.causes[cause] += 1
        return delay
