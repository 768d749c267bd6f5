"""The one restart policy: what may be retried, how many times, how soon, and a tally of why.

Three places restart something: the PS-mode driver restarts ``train`` after a lost node, a PS-mode
node's task restarts its TF process in place, and the allreduce group restarts every worker's
training process together. All three count against ``--max-restarts`` through
:class:`RestartPolicy`, and all three retry only what another attempt can fix: a process that died
(a signal, a lost peer, a lost node), never an error in the job's code or input, which would fail
the same way every time.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# Exit code of a training process whose error is the job's own (its code or its input): final.
EXIT_NOT_RETRYABLE = 3

# Errors that mean "a process of the cluster went away", not "the job's code is wrong".
CLUSTER_ERRORS = ("UnavailableError", "AbortedError", "CancelledError", "DeadlineExceededError",
                  "PSUnavailableError", "WorkerPreemptionError", "CollectiveGroupError")
CLUSTER_MESSAGES = ("Socket closed", "failed to connect to all addresses", "Connection reset by peer",
                    "peer went away", "Connection refused")


def classify(exc: BaseException) -> str:
    """``"cluster"`` when ``exc`` (or what caused it) is a lost process; ``"user"`` otherwise."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc)
        if type(exc).__name__ in CLUSTER_ERRORS or any(m in text for m in CLUSTER_MESSAGES):
            return "cluster"
        exc = exc.__cause__ or exc.__context__
    return "user"


@dataclass
class RestartPolicy:
    """``max_restarts`` restarts with exponential backoff (``backoff`` s, doubling, capped)."""

    max_restarts: int                 # --max-restarts
    backoff: float = 1.0
    max_backoff: float = 30.0
    restarts: int = 0
    causes: Counter = field(default_factory=Counter)

    @property
    def exhausted(self) -> bool:
        return self.restarts >= self.max_restarts

    def next_delay(self, cause: str) -> float | None:
        """Count a restart for ``cause``; the delay before it, or None when restarts are exhausted."""
        if self.exhausted:
            return None
        delay = min(self.max_backoff, self.backoff * (2 ** self.restarts))
        self.restarts += 1
        self.causes[cause] += 1
        return delay
