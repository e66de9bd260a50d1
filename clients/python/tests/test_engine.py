"""The retry engine on its own: a state machine fed outcomes and times (no I/O, no clock)."""

from __future__ import annotations

import pytest

from chatledger import Attempts, CallKind, Outcome, Retry

POLICY = Retry(attempts=4, initial_backoff=1.0, max_backoff=8.0, multiplier=2.0, total_timeout=30.0)


def no_jitter() -> float:
    return 1.0  # the top of each backoff step


def test_backoff_grows_to_its_cap_with_jitter_in_the_upper_half() -> None:
    assert [POLICY.backoff(n, rng=no_jitter) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert [POLICY.backoff(n, rng=lambda: 0.0) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]


def test_retry_after_is_a_floor_never_shortened() -> None:
    assert POLICY.backoff(1, 20.0, rng=no_jitter) == 20.0
    attempts = Attempts(POLICY, CallKind.QUICK, started=0.0, rng=no_jitter)
    decision = attempts.after(Outcome.STATUS, 0.1, status=503, retry_after=5.0)
    assert decision.retry and decision.delay == 5.0


def test_attempts_are_counted_and_bounded() -> None:
    attempts = Attempts(POLICY, CallKind.QUICK, started=0.0, rng=no_jitter)
    decisions = [attempts.after(Outcome.CONNECT_FAILED, 0.0) for _ in range(4)]
    assert [d.retry for d in decisions] == [True, True, True, False]
    assert attempts.count == 4 and "4 attempts" in (decisions[-1].reason or "")


def test_no_attempt_starts_after_the_total_deadline() -> None:
    attempts = Attempts(POLICY, CallKind.QUICK, started=100.0, rng=no_jitter)
    assert attempts.after(Outcome.TIMEOUT, 128.0).retry  # 128 + 1 <= 130
    late = attempts.after(Outcome.TIMEOUT, 128.5)  # 128.5 + 2 > 130
    assert not late.retry and "budget" in (late.reason or "")
    # A Retry-After that would land past the deadline gives up now rather than retry early.
    fresh = Attempts(POLICY, CallKind.QUICK, started=0.0, rng=no_jitter)
    assert not fresh.after(Outcome.STATUS, 1.0, status=503, retry_after=60.0).retry


@pytest.mark.parametrize(
    ("outcome", "status", "quick", "long"),
    [
        (Outcome.CONNECT_FAILED, None, True, True),  # nothing was sent
        (Outcome.STATUS, 503, True, True),  # chatledger refused before doing any work
        (Outcome.STATUS, 502, True, False),  # a proxy: the job may be running behind it
        (Outcome.STATUS, 504, True, False),
        (Outcome.TIMEOUT, None, True, False),  # sent, no answer: a resend restarts the job
        (Outcome.CONNECTION_LOST, None, True, False),
        (Outcome.STATUS, 409, False, False),  # answers, not failures of the transport
        (Outcome.STATUS, 500, False, False),
        (Outcome.STATUS, 429, False, False),
    ],
)
def test_what_is_resent_for_quick_and_long_calls(outcome: Outcome, status: int | None, quick: bool, long: bool) -> None:
    # ONCE calls (writes without an idempotency key) follow the rule of long calls.
    for kind, expected in ((CallKind.QUICK, quick), (CallKind.LONG, long), (CallKind.ONCE, long)):
        attempts = Attempts(POLICY, kind, started=0.0, rng=no_jitter)
        assert attempts.after(outcome, 0.0, status=status).retry is expected, (kind, outcome, status)


def test_none_is_one_attempt_and_statuses_are_configurable() -> None:
    assert not Attempts(Retry.none(), CallKind.QUICK, started=0.0).after(Outcome.CONNECT_FAILED, 0.0).retry
    only_503 = Retry(statuses=frozenset({503}))
    assert not Attempts(only_503, CallKind.QUICK, started=0.0).after(Outcome.STATUS, 0.0, status=502).retry
    with pytest.raises(ValueError):
        Retry(attempts=0)
