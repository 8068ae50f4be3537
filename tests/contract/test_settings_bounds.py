"""Settings bounds: every value that used to break later is a ConfigError at construction.

The cases are the ones the adversarial audit found (overflowing counts, subnormal windows,
durations beyond what a thread can wait, header names httpx refuses); the values exactly at
each bound are accepted and work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest

from resilience import (
    Bulkhead,
    CircuitBreaker,
    ConfigError,
    Policy,
    Retry,
    RetryBudget,
    backoff,
    deadline,
    timeout,
)
from resilience._propagation import inbound_budget
from resilience._validate import (
    MAX_BYTES,
    MAX_CONCURRENT,
    MAX_DURATION,
    MAX_WINDOW,
    MIN_WINDOW,
    show,
)
from resilience.httpx import ResilientTransport
from resilience.integrations._options import Options
from resilience.testing import FakeClock


def _ok() -> str:
    return "ok"


BAD: list[tuple[str, Callable[[], object], str]] = [
    ("window=2**63", lambda: CircuitBreaker("b", window=2**63), "window must be an integer <= "),
    (
        "consecutive_failures=10**20",
        lambda: CircuitBreaker("b", consecutive_failures=10**20),
        "consecutive_failures must be an integer <= ",
    ),
    (
        "window_seconds=5e-324",
        lambda: CircuitBreaker("b", window_seconds=5e-324),
        "window_seconds must be at least 0.001 seconds, got 5e-324",
    ),
    (
        "window_seconds=1e-310",
        lambda: CircuitBreaker("b", window_seconds=1e-310),
        "window_seconds must be at least 0.001 seconds",
    ),
    (
        "open_duration=1e10",
        lambda: CircuitBreaker("b", open_duration=1e10),
        "open_duration must be at most 2592000 seconds (30 days), got 10000000000.0",
    ),
    (
        "open_duration=timedelta.max",
        lambda: CircuitBreaker("b", open_duration=timedelta.max),
        "open_duration must be at most",
    ),
    ("Bulkhead(2**63)", lambda: Bulkhead(2**63), "max_concurrent must be an integer <= 1000000"),
    ("Bulkhead(10**12)", lambda: Bulkhead(10**12), "max_concurrent must be an integer <= "),
    (
        "Bulkhead(wait_timeout=1e10)",
        lambda: Bulkhead(1, max_waiting=1, wait_timeout=1e10),
        "wait_timeout must be at most",
    ),
    ("Policy(bulkhead=10**12)", lambda: Policy(bulkhead=10**12), "max_concurrent must be"),
    ("RetryBudget(ttl=5e-324)", lambda: RetryBudget(ttl=5e-324), "ttl must be at least 0.001"),
    (
        "RetryBudget(ratio=1.7e308)",
        lambda: RetryBudget(ratio=1.7e308),
        "ratio must be a finite number in [0, 1000], got 1.7e+308",
    ),
    (
        "RetryBudget(min_per_second=1e308)",
        lambda: RetryBudget(min_per_second=1e308),
        "min_per_second must be a finite number in [0, 1000000]",
    ),
    ("backoff.constant(1e10)", lambda: backoff.constant(1e10), "seconds must be at most"),
    (
        "backoff.exponential(maximum=1e308)",
        lambda: backoff.exponential(maximum=1e308),
        "maximum must be at most",
    ),
    (
        "backoff.exponential(multiplier=1e300)",
        lambda: backoff.exponential(multiplier=1e300),
        "multiplier must be a finite number in [1, 1000]",
    ),
    ("Retry(timeout=1e10)", lambda: Retry(on=OSError, timeout=1e10), "timeout must be at most"),
    (
        "deadline(1e10)",
        lambda: deadline(1e10),
        "seconds must be at most 2592000 seconds (30 days), got 10000000000.0; for no deadline",
    ),
    ("deadline(inf)", lambda: deadline(float("inf")), "seconds must be a finite number"),
    ("timeout(1e10)", lambda: timeout(1e10), "seconds must be at most"),
    ("Policy(timeout=1e10)", lambda: Policy(timeout=1e10), "timeout must be at most"),
    (
        "ResilientTransport(deadline_header='x deadline')",
        lambda: ResilientTransport(deadline_header="x deadline"),
        "deadline_header must be an HTTP header name",
    ),
    (
        "ResilientTransport(deadline_header='x-a\\r\\nx-b')",
        lambda: ResilientTransport(deadline_header="x-a\r\nx-b"),
        "deadline_header must be an HTTP header name",
    ),
    (
        "ResilientTransport(buffer_limit=2**62)",
        lambda: ResilientTransport(buffer_limit=2**62),
        "buffer_limit must be an integer <= 1073741824",
    ),
    (
        "ResilientTransport(max_retry_after=1e10)",
        lambda: ResilientTransport(max_retry_after=1e10),
        "max_retry_after must be at most",
    ),
    (
        "Options(max_concurrent=10**12)",
        lambda: Options(max_concurrent=10**12),
        "max_concurrent must be an integer <= ",
    ),
    ("Options(timeout=1e10)", lambda: Options(timeout=1e10), "timeout must be at most"),
    # Flask read "<" as a route variable (a ValueError from werkzeug); the others never match.
    *[
        (f"Options(status_path={path!r})", lambda p=path: Options(status_path=p), "status_path")
        for path in ("/<x", "/a?b", "/a#b", "//", "/a b", "/%2F", "/a/../b")
    ],
]


@pytest.mark.parametrize(("build", "message"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_out_of_bounds_settings_are_config_errors(
    build: Callable[[], object], message: str
) -> None:
    """A value beyond a bound fails at construction, naming the setting, the value and the bound."""
    with pytest.raises(ConfigError) as info:
        build()
    assert message in str(info.value)


def test_count_window_hint_says_what_to_use_instead() -> None:
    """A too-large count window points at window_seconds."""
    with pytest.raises(ConfigError, match="use window_seconds instead"):
        CircuitBreaker("b", window=MAX_WINDOW + 1)


def test_huge_ints_are_shown_without_failing() -> None:
    """An int too long to print still gives a ConfigError, with its size instead of digits."""
    huge = 10**5000  # beyond sys.get_int_max_str_digits(): repr() raises ValueError
    with pytest.raises(ConfigError, match="window must be an integer <= 100000, got <an int of"):
        CircuitBreaker("b", window=huge)
    with pytest.raises(ConfigError, match="open_duration must be a finite number"):
        CircuitBreaker("b", open_duration=huge)
    with pytest.raises(ConfigError, match="failure_rate must be in"):
        CircuitBreaker("b", failure_rate=huge)
    with pytest.raises(ConfigError, match="ratio must be a finite number"):
        RetryBudget(ratio=huge)


def test_show_keeps_messages_short_and_never_raises() -> None:
    """Long reprs are cut, and a broken __repr__ does not escape."""

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    assert show("x" * 500).endswith("...")
    assert len(show("x" * 500)) == 80
    assert show(Broken()) == "<a Broken that cannot be shown>"


def test_values_at_the_bounds_are_accepted_and_work() -> None:
    """The largest and smallest accepted values build components that work on first use."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        "bounds",
        window_seconds=MIN_WINDOW,
        open_duration=MAX_DURATION,
        slow_call_duration=MAX_DURATION,
        clock=clock,
    )
    for _ in range(20):
        assert breaker.call(_ok) == "ok"  # a subnormal window made this a ZeroDivisionError
        clock.advance(0.0004)
    big = CircuitBreaker("bounds-count", window=MAX_WINDOW, consecutive_failures=MAX_WINDOW)
    assert big.call(_ok) == "ok"
    budget = RetryBudget(ratio=1000.0, min_per_second=1e6, ttl=MIN_WINDOW, clock=clock)
    for _ in range(20):
        budget.record_call()
        assert budget.try_spend()
        clock.advance(0.0003)
    assert budget.available() > 0
    waits: list[float] = []
    retry = Retry(
        on=ConnectionError,
        attempts=3,
        backoff=backoff.constant(MAX_DURATION),
        sleep=waits.append,
        clock=clock,
    )
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError
        return "ok"

    assert retry.call(flaky) == "ok"
    assert waits == [MAX_DURATION, MAX_DURATION]
    assert Bulkhead(MAX_CONCURRENT).available == MAX_CONCURRENT
    transport = ResilientTransport(buffer_limit=MAX_BYTES, max_retry_after=MAX_DURATION)
    assert transport._core.buffer_limit == MAX_BYTES


def test_a_thread_waits_under_the_longest_deadline_and_wait_timeout() -> None:
    """A bulkhead wait under deadline(MAX_DURATION) with wait_timeout=MAX_DURATION works.

    Beyond threading.TIMEOUT_MAX the wait raised OverflowError; now such values cannot be
    set, and the largest that can is a valid wait.
    """
    bulkhead = Bulkhead(1, max_waiting=1, wait_timeout=MAX_DURATION)
    bulkhead.acquire()
    errors: list[BaseException] = []
    done = threading.Event()

    def waiter() -> None:
        try:
            with deadline(MAX_DURATION):
                bulkhead.acquire()
            bulkhead.release()
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    for _ in range(2000):  # until the waiter is queued (bounded: ~2 s)
        if bulkhead.waiting:
            break
        done.wait(0.001)
    bulkhead.release()
    assert done.wait(10)
    thread.join(5)
    assert errors == []


def test_inbound_budget_beyond_any_wait_is_no_budget() -> None:
    """grpc-timeout 99999999H (3.6e11 s, valid gRPC) is beyond threading.TIMEOUT_MAX: no budget."""
    assert inbound_budget({"grpc-timeout": "99999999H"}) is None
    # The shorter header still counts when both are sent.
    both = {"grpc-timeout": "99999999H", "x-envoy-expected-rq-timeout-ms": "250"}
    assert inbound_budget(both) == 0.25


def test_long_inbound_budgets_within_any_wait_are_kept() -> None:
    """A long budget a thread can still wait for (1e7 s) stays a budget."""
    assert inbound_budget({"x-envoy-expected-rq-timeout-ms": "9999999999"}) == 9999999.999


def test_deadline_header_names_must_be_tokens() -> None:
    """A valid header name is kept, and a request under a deadline sends it."""
    seen: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(204)

    transport = ResilientTransport(
        httpx.MockTransport(handler), deadline_header="X-Deadline_ms.v1!"
    )
    with httpx.Client(transport=transport) as client, deadline(5):
        client.get("http://h.test/")
    assert 0 < int(seen[0]["x-deadline_ms.v1!"]) <= 5000
