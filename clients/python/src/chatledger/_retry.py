"""The retry engine: a pure state machine, no I/O, no clock, no sleeping.

The sync and async clients drive it the same way::

    attempts = Attempts(policy, kind, started=now())
    while True:
        outcome = <one HTTP attempt>            # the wrapper's only job
        decision = attempts.after(outcome, now())
        if not decision.retry:
            raise <the outcome's error>
        <sleep decision.delay>                  # time.sleep or asyncio.sleep

Everything that decides (which outcomes are retried for which kind of call, the backoff with
jitter, ``Retry-After``, the attempt count and the total deadline) lives here, so both paths
behave identically and the rules are tested without a network.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

__all__ = ["Attempts", "CallKind", "Decision", "Outcome", "Retry"]


class CallKind(Enum):
    """How a call may be resent.

    ``QUICK``: appends, resets and reads. They are cheap and safe to resend (reads change
    nothing; appends and resets carry an idempotency key), so every transient failure is
    retried, including a timeout or a connection lost after the request went out.

    ``LONG``: verify, export and audit search, whose work on the server grows with the data. They get
    the long per-attempt timeout, and are resent only when the server certainly did not start
    the job: the connection could not be made, or the server answered 503 (it refuses before
    doing any work). A timeout, a lost connection or a proxy's 502/504 after the request went
    out is raised at once: resending would start the whole job again.

    ``ONCE``: writes without an idempotency key (placing a legal hold, an erasure): the
    quick timeout, but resent only under the same rule as ``LONG`` calls, so that a lost
    answer can never make the server do them twice.
    """

    QUICK = "quick"
    LONG = "long"
    ONCE = "once"


class Outcome(Enum):
    """What one attempt came to, as far as retrying is concerned."""

    #: The connection could not be established: nothing was sent.
    CONNECT_FAILED = "connect_failed"
    #: The request was (perhaps partly) sent and no complete answer came in time.
    TIMEOUT = "timeout"
    #: The request was (perhaps partly) sent and the connection broke before the answer.
    CONNECTION_LOST = "connection_lost"
    #: The server (or a proxy) answered with an error status: see ``status``.
    STATUS = "status"


@dataclass(frozen=True)
class Retry:
    """When and how long the client retries.

    Transient failures are retried: the connection cannot be made, times out or breaks, or
    the answer is one of ``statuses`` (503 ``unavailable`` from chatledger; 502/504 from a
    proxy in front of it). Waits grow exponentially from ``initial_backoff`` to
    ``max_backoff`` (with jitter) and are never shorter than the server's ``Retry-After``. At
    most ``attempts`` attempts are made, and none starts later than ``total_timeout`` seconds
    after the first: then the last error is raised. Verify and export are resent only when
    the server cannot have started them (see :class:`CallKind`).

    Appends and resets always carry an idempotency key, the same on every attempt, so a
    retry can never write twice.
    """

    attempts: int = 8
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0
    total_timeout: float = 30.0
    statuses: frozenset[int] = field(default_factory=lambda: frozenset({502, 503, 504}))

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("Retry.attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.total_timeout < 0:
            raise ValueError("Retry backoffs and total_timeout must not be negative")

    @classmethod
    def none(cls) -> Retry:
        """One attempt, no retry."""
        return cls(attempts=1)

    def backoff(self, attempt: int, retry_after: float | None = None, *, rng: Callable[[], float] = random.random) -> float:
        """The wait after failed attempt number ``attempt`` (1-based): half the exponential
        step plus up to half of it at random, and at least ``retry_after``."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        wait = base / 2 + rng() * base / 2
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait


@dataclass(frozen=True)
class Decision:
    """What to do after a failed attempt: ``retry`` after ``delay`` seconds, or give up."""

    retry: bool
    delay: float = 0.0
    #: Why it gives up (for the error message), or ``None`` when it retries.
    reason: str | None = None


_LONG_CALL_STATUSES = frozenset({503})


class Attempts:
    """The retry state of one call. Feed it each failed attempt's outcome with the time
    (any monotonic clock, in seconds); it says whether and when to try again."""

    __slots__ = ("_policy", "_kind", "_started", "_rng", "count")

    def __init__(
        self,
        policy: Retry,
        kind: CallKind,
        *,
        started: float,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._policy = policy
        self._kind = kind
        self._started = started
        self._rng = rng
        #: Attempts made so far (the caller counts one per attempt with :meth:`after`).
        self.count = 1

    def retryable(self, outcome: Outcome, status: int | None = None) -> bool:
        """Whether this outcome may be resent at all for this kind of call."""
        if outcome is Outcome.CONNECT_FAILED:
            return True
        if outcome is Outcome.STATUS:
            if self._kind is not CallKind.QUICK:
                return status in _LONG_CALL_STATUSES and status in self._policy.statuses
            return status in self._policy.statuses
        # A timeout or a lost connection after the request went out.
        return self._kind is CallKind.QUICK

    def after(
        self,
        outcome: Outcome,
        now: float,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> Decision:
        """The decision after the current attempt failed with ``outcome``. When it says
        retry, the attempt counter moves on to the next attempt."""
        if not self.retryable(outcome, status):
            return Decision(False, reason="not retryable")
        if self.count >= self._policy.attempts:
            return Decision(False, reason=f"{self.count} attempts made")
        delay = self._policy.backoff(self.count, retry_after, rng=self._rng)
        if now + delay - self._started > self._policy.total_timeout:
            return Decision(False, reason=f"retry budget of {self._policy.total_timeout:g}s spent")
        self.count += 1
        return Decision(True, delay)
