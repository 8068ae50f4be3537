"""Settings fuzz: a setting is a ConfigError at construction, or it works on first use.

For every public component hypothesis builds settings that mix valid values (the bounds
and subnormals included) with at most one hostile value (NaN, infinities, huge ints,
subnormals, negative numbers, bools, strings, bytes, Decimal, Fraction, complex, extreme
timedeltas, arbitrary text). Each example is either rejected with a `ConfigError` naming
one of the settings it was given, or used at once: calls through it (sync, and async where
it is cheap) may raise only the call's own error or a documented `ResilienceError`. Time
is a `FakeClock` and sleeps are recorded, never slept, so a 30-day wait costs nothing.

Derandomized and without an example database: every run tries the same examples.
"""

from __future__ import annotations

import asyncio
import math
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import flask
import httpx
import pytest
import redis
import tenacity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilience import (
    Bulkhead,
    CircuitBreaker,
    ConfigError,
    Policy,
    ResilienceError,
    Retry,
    RetryBudget,
    backoff,
    deadline,
    fallback,
    timeout,
)
from resilience._validate import (
    MAX_BYTES,
    MAX_CONCURRENT,
    MAX_DURATION,
    MAX_INTEGER,
    MAX_MULTIPLIER,
    MAX_PER_SECOND,
    MAX_RATIO,
    MAX_SOCKET_TIMEOUT,
    MAX_SYNC_INTERVAL,
    MAX_WINDOW,
    MIN_INTERVAL,
    MIN_WINDOW,
)
from resilience.httpx import ResilientTransport
from resilience.integrations.flask import Resilience
from resilience.stores import RedisStore
from resilience.testing import FakeClock

EXAMPLES = 80
"""Hypothesis examples per component, after the edge sweep: the file takes ~5 s of CPU."""
HTTP_EXAMPLES = 40
"""For the transports: each accepted example sends five requests to a real server."""
REDIS_EXAMPLES = 20
"""For RedisStore: each accepted example starts and stops a store's threads."""


def fuzz_settings(examples: int) -> settings:
    """Hypothesis settings: *examples* examples, the same ones on every run."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


# ---------------------------------------------------------------------------- values

EDGE_VALUES: list[object] = [
    0.0,
    -0.0,
    5e-324,
    1e-320,
    1e-310,
    -5e-324,
    -1.0,
    9.3e9,
    1e10,
    1e300,
    1.7976931348623157e308,
    math.inf,
    -math.inf,
    math.nan,
    0,
    -1,
    2**31,
    2**63,
    10**12,
    10**20,
    10**100,
    True,
    False,
    None,
    "1",
    "",
    b"1",
    Decimal("1.5"),
    Fraction(1, 2),
    1j,
    [1],
    (1,),
    {},
    object(),
    timedelta.max,
    timedelta.min,
    timedelta(microseconds=-1),
    timedelta(days=10**6),
    timedelta(days=30, microseconds=1),
    100_001,
    1_000_001,
    2**31,
    "/<x",  # a Flask route variable
    "/a?b",
    "//",
    "x deadline",  # not an HTTP header name
    "x-a\r\nx-b",
]
"""Values that broke components before (subnormals, overflowing ints, durations beyond any
wait, sizes that allocate GBs), values just past a bound, and values of the wrong type.
Every setting of every component is tried with each of them."""

# The edges three times out of seven: they are where bugs hide; the rest explores.
EDGES = st.sampled_from(EDGE_VALUES)
HOSTILE = st.one_of(
    EDGES,
    EDGES,
    EDGES,
    st.floats(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.timedeltas(),
    st.text(max_size=8),
)


def seconds(low: float = 5e-324, high: float = MAX_DURATION) -> st.SearchStrategy[object]:
    """Valid durations in [low, high]: the bounds, floats and timedeltas in between."""
    shortest = timedelta(microseconds=max(1, math.ceil(low * 1e6)))
    return st.one_of(
        st.sampled_from([low, high, min(1.0, high)]),
        st.floats(min_value=low, max_value=high),
        st.timedeltas(min_value=shortest, max_value=timedelta(seconds=high)),
    )


def counts(low: int, high: int) -> st.SearchStrategy[int]:
    """Valid counts in [low, high], the bounds and small values most often."""
    return st.one_of(
        st.sampled_from([low, low + 1, high]), st.integers(min_value=low, max_value=high)
    )


RATES = st.one_of(st.sampled_from([5e-324, 1.0, 0.5]), st.floats(min_value=5e-324, max_value=1.0))
TOKENS = st.from_regex(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,20}", fullmatch=True)
PATHS = st.from_regex(r"(/[A-Za-z0-9\-_~!$&'()*+,;=:@]{1,8}){1,3}/?", fullmatch=True)


# ---------------------------------------------------------------------------- the harness


@dataclass(frozen=True)
class Target:
    """A component: its settings (name -> valid values), how to build it, how to use it."""

    valid: Mapping[str, st.SearchStrategy[Any]]
    build: Callable[[dict[str, Any], FakeClock], Any]
    use: Callable[[Any, FakeClock, dict[str, Any]], None]
    # Names a ConfigError may give for a setting (Policy(bulkhead=n) is a max_concurrent).
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@st.composite
def configs(draw: st.DrawFn, target: Target) -> dict[str, Any]:
    """Settings for *target*: each one left out or valid, and at most one hostile."""
    names = sorted(target.valid)
    hostile = draw(st.sampled_from([None, *names]))
    kwargs: dict[str, Any] = {}
    for name in names:
        if name == hostile:
            kwargs[name] = draw(HOSTILE)
        elif draw(st.booleans()):
            kwargs[name] = draw(target.valid[name])
    return kwargs


def run(target: Target, kwargs: dict[str, Any], tally: Counter[str]) -> None:
    """Build; a ConfigError must name a given setting; anything accepted must work."""
    clock = FakeClock()
    tally["built"] += 1
    try:
        component = target.build(dict(kwargs), clock)
    except ConfigError as exc:
        tally["rejected"] += 1
        named = {alias for name in kwargs for alias in (name, *target.aliases.get(name, ()))}
        message = str(exc)
    else:
        tally["accepted"] += 1
        target.use(component, clock, kwargs)
        return
    assert any(name in message for name in named), (kwargs, message)
    assert "got " in message, message


def fuzz(target: Target, examples: int = EXAMPLES) -> Counter[str]:
    """Every edge value in every setting alone, then *examples* hypothesis mixes.

    Returns how many configs were built, accepted and rejected.
    """
    tally: Counter[str] = Counter()
    for name in sorted(target.valid):
        for value in EDGE_VALUES:
            run(target, {name: value}, tally)

    @fuzz_settings(examples)
    @given(configs(target))
    def check(kwargs: dict[str, Any]) -> None:
        run(target, kwargs, tally)

    check()
    # Both sides must be exercised, or the example mix is broken.
    assert tally["accepted"] > examples // 10, tally
    assert tally["rejected"] > len(target.valid) * len(EDGE_VALUES) // 2, tally
    print(f"settings fuzz: {dict(tally)}")  # shown with -s: counts for reports
    return tally


# ---------------------------------------------------------------------------- calls


class Down(ConnectionError):
    """The called function's own failure."""


def ok() -> str:
    return "ok"


async def aok() -> str:
    return "ok"


def down() -> str:
    raise Down


def flaky(failures: int) -> Callable[[], str]:
    """A function failing *failures* times, then answering "ok"."""
    left = [failures]

    def call() -> str:
        if left[0]:
            left[0] -= 1
            raise Down
        return "ok"

    return call


def recorder(clock: FakeClock, waits: list[float]) -> Callable[[float], None]:
    """A sleep that checks and records the wait, and moves the fake clock instead."""

    def sleep(seconds: float) -> None:
        assert isinstance(seconds, float), seconds
        assert 0.0 <= seconds <= MAX_DURATION, seconds  # a real sleep of it would not overflow
        waits.append(seconds)
        clock.advance(seconds)

    return sleep


def hold_and_wait(bulkhead: Bulkhead, scope: Any = None) -> None:
    """Every permit held; a thread waits for one (inside *scope*); one is given back.

    The waiter may get its permit, or a documented rejection (BulkheadFull,
    DeadlineExceeded); anything else fails the test.
    """
    held = bulkhead.max_concurrent
    for _ in range(held):
        bulkhead.acquire()
    errors: list[BaseException] = []
    done = threading.Event()

    def waiter() -> None:
        try:
            if scope is None:
                bulkhead.acquire()
            else:
                with scope:
                    bulkhead.acquire()
            bulkhead.release()
        except ResilienceError:
            pass
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    for _ in range(2000):  # until the waiter is queued or gave up (bounded: ~2 s)
        if bulkhead.waiting or done.is_set():
            break
        done.wait(0.001)
    for _ in range(held):
        bulkhead.release()
    assert done.wait(10), "the waiter never returned"
    thread.join(5)
    assert errors == [], errors


def wait_here(bulkhead: Bulkhead) -> str:
    """Wait for a bulkhead permit in this thread, under whatever deadline is active here.

    Every permit is held; a helper thread gives them back once this thread waits. A
    deadline or wait_timeout that ends the wait first is a documented ResilienceError.
    """
    held = bulkhead.max_concurrent
    for _ in range(held):
        bulkhead.acquire()
    stop = threading.Event()

    def give_back() -> None:
        for _ in range(2000):  # until the waiter is queued or gave up (bounded: ~2 s)
            if bulkhead.waiting or stop.is_set():
                break
            stop.wait(0.001)
        for _ in range(held):
            bulkhead.release()

    helper = threading.Thread(target=give_back, daemon=True)
    helper.start()
    try:
        bulkhead.acquire()
        bulkhead.release()
    finally:
        stop.set()
        helper.join(10)
    assert not helper.is_alive()
    return "ok"


# ---------------------------------------------------------------------------- components


def use_breaker(breaker: CircuitBreaker, clock: FakeClock, kwargs: dict[str, Any]) -> None:
    def slow() -> str:
        clock.advance(0.5)
        return "ok"

    for index in range(30):
        try:
            breaker.call((ok, down, slow)[index % 3])
        except (Down, ResilienceError):
            pass
        clock.advance(0.25)
    clock.advance(MAX_DURATION)  # past any open_duration: probes are let through
    assert breaker.state.value in ("closed", "open", "half_open")
    metrics = breaker.metrics()
    assert 0.0 <= metrics.failure_rate <= 1.0
    for _ in range(3):
        try:
            assert breaker.call(ok) == "ok"
        except ResilienceError:
            pass
    try:
        assert asyncio.run(breaker.call_async(aok)) == "ok"
    except ResilienceError:
        pass


BREAKER = Target(
    valid={
        "failure_rate": RATES,
        "consecutive_failures": st.one_of(st.none(), counts(1, MAX_WINDOW)),
        "window": counts(1, MAX_WINDOW),
        "window_seconds": st.one_of(st.none(), seconds(MIN_WINDOW)),
        "minimum_calls": counts(1, MAX_INTEGER),
        "slow_call_duration": st.one_of(st.none(), seconds()),
        "slow_call_rate": RATES,
        "open_duration": seconds(),
        "half_open_calls": counts(1, MAX_INTEGER),
    },
    build=lambda kw, clock: CircuitBreaker(f"fuzz-{uuid.uuid4().hex}", clock=clock, **kw),
    use=use_breaker,
)


def valid_backoff() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.just(backoff.none()),
        st.builds(backoff.constant, seconds(0.0)),
        st.builds(
            lambda initial, extra, multiplier, jitter: backoff.exponential(
                initial=initial, maximum=initial + extra, multiplier=multiplier, jitter=jitter
            ),
            st.floats(min_value=0.0, max_value=MAX_DURATION / 2),
            st.floats(min_value=0.0, max_value=MAX_DURATION / 2),
            st.floats(min_value=1.0, max_value=MAX_MULTIPLIER),
            st.booleans(),
        ),
        st.sampled_from(
            [
                tenacity.wait_exponential(multiplier=1),  # tenacity's own cap: ~4.6e18 s
                tenacity.wait_random_exponential(multiplier=1e6),
                tenacity.wait_fixed(1) + tenacity.wait_random(0, 1),
                tenacity.wait_exception(lambda exc: 2.0),
            ]
        ),
    )


def use_retry(retry: Retry, clock: FakeClock, kwargs: dict[str, Any]) -> None:
    try:  # a thread wait under the retry's own timeout
        assert retry.call(wait_here, Bulkhead(1, max_waiting=1)) == "ok"
    except ResilienceError:
        pass
    for failures in (0, 1, 4):
        try:
            assert retry.call(flaky(failures)) == "ok"
        except (Down, ResilienceError):
            pass  # attempts, the timeout or the budget ran out: the call's own error
    try:
        assert retry(flaky(2))() == "ok"
    except (Down, ResilienceError):
        pass
    left = [2]

    async def aflaky() -> str:
        if left[0]:
            left[0] -= 1
            raise Down
        return "ok"

    try:
        assert asyncio.run(retry.call_async(aflaky)) == "ok"
    except (Down, ResilienceError):
        pass


def build_retry(kw: dict[str, Any], clock: FakeClock) -> Retry:
    waits: list[float] = []
    sleep = recorder(clock, waits)

    async def asleep(seconds: float) -> None:
        sleep(seconds)

    return Retry(on=Down, clock=clock, sleep=sleep, asleep=asleep, **kw)


RETRY = Target(
    valid={
        "attempts": counts(1, MAX_INTEGER),
        "timeout": st.one_of(st.none(), seconds()),
        "backoff": valid_backoff(),
        "budget": st.one_of(st.none(), st.just("budget")),  # built with the Retry's clock
    },
    build=lambda kw, clock: build_retry(
        {**kw, "budget": RetryBudget(clock=clock)} if kw.get("budget") == "budget" else kw,
        clock,
    ),
    use=use_retry,
)


def use_backoff(strategy: Any, clock: FakeClock, kwargs: dict[str, Any]) -> None:
    for attempt in (1, 2, 3, 60, 10_000, 10**9):
        wait = strategy.compute(attempt)
        assert isinstance(wait, float)
        assert 0.0 <= wait <= MAX_DURATION, wait
    use_retry(build_retry({"attempts": 4, "backoff": strategy}, clock), clock, kwargs)


EXPONENTIAL = Target(
    valid={
        # Drawn apart, so that any two are a valid pair (initial <= maximum, default 10 s).
        "initial": seconds(0.0, 10.0),
        "maximum": seconds(10.0),
        "multiplier": st.one_of(
            st.sampled_from([1.0, MAX_MULTIPLIER]), st.floats(1.0, MAX_MULTIPLIER)
        ),
        "jitter": st.booleans(),
    },
    build=lambda kw, clock: backoff.exponential(**kw),
    use=use_backoff,
)

CONSTANT = Target(
    valid={"seconds": seconds(0.0)},
    build=lambda kw, clock: backoff.constant(**kw) if kw else backoff.constant(1.0),
    use=use_backoff,
)


def use_budget(budget: RetryBudget, clock: FakeClock, kwargs: dict[str, Any]) -> None:
    for _ in range(30):
        budget.record_call()
        budget.try_spend()
        assert budget.available() >= 0
        clock.advance(0.3)
    clock.advance(MAX_DURATION)
    assert budget.available() >= 0


BUDGET = Target(
    valid={
        "ratio": st.one_of(st.sampled_from([0.0, MAX_RATIO]), st.floats(0.0, MAX_RATIO)),
        "min_per_second": st.one_of(
            st.sampled_from([0.0, MAX_PER_SECOND]), st.floats(0.0, MAX_PER_SECOND)
        ),
        "ttl": seconds(MIN_WINDOW),
    },
    build=lambda kw, clock: RetryBudget(clock=clock, **kw),
    use=use_budget,
)


def use_bulkhead(bulkhead: Bulkhead, clock: FakeClock, kwargs: dict[str, Any]) -> None:
    with bulkhead:
        pass
    assert bulkhead.call(ok) == "ok"
    if bulkhead.max_concurrent <= 3 and bulkhead.max_waiting:
        hold_and_wait(bulkhead)
    assert bulkhead.active == 0


BULKHEAD = Target(
    valid={
        "max_concurrent": counts(1, MAX_CONCURRENT),
        "max_waiting": counts(0, MAX_INTEGER),
        "wait_timeout": st.one_of(st.none(), seconds(0.0)),
        "name": st.one_of(st.none(), st.text(min_size=1, max_size=10)),
    },
    build=lambda kw, clock: Bulkhead(kw.pop("max_concurrent", 1), **kw),
    use=use_bulkhead,
)


def use_deadline(scope: Any, clock: FakeClock, kwargs: dict[str, Any]) -> None:
    with scope:
        left = scope.remaining()
        assert left is not None
        assert left <= scope.seconds
    hold_and_wait(Bulkhead(1, max_waiting=1), deadline(scope.seconds))

    async def main() -> None:
        async with deadline(scope.seconds):
            await asyncio.sleep(0)

    try:
        asyncio.run(main())
    except ResilienceError:  # deadline(0): the block is cancelled, as documented
        pass


DEADLINE = Target(
    valid={"seconds": seconds(0.0)},
    build=lambda kw, clock: deadline(kw.get("seconds", 1.0)),
    use=use_deadline,
)


def use_timeout(limit: Any, clock: FakeClock, kwargs: dict[str, Any]) -> None:
    try:
        assert limit(wait_here)(Bulkhead(1, max_waiting=1)) == "ok"
    except ResilienceError:
        pass
    try:
        assert limit(ok)() == "ok"
        assert asyncio.run(limit(aok)()) == "ok"
    except ResilienceError:  # a subnormal limit: the deadline is over before the call
        pass


TIMEOUT = Target(
    valid={"seconds": seconds()},
    build=lambda kw, clock: timeout(kw.get("seconds", 1.0)),
    use=use_timeout,
)


def build_policy(kw: dict[str, Any], clock: FakeClock) -> Policy:
    if kw.get("retry") == "retry":
        kw["retry"] = build_retry({"attempts": 3}, clock)
    if kw.get("breaker") == "breaker":
        kw["breaker"] = CircuitBreaker(f"fuzz-{uuid.uuid4().hex}", consecutive_failures=2)
    if kw.get("fallback") == "fallback":
        kw["fallback"] = fallback("fallen back", on=Down)
    return Policy(**kw)


def use_policy(policy: Policy, clock: FakeClock, kwargs: dict[str, Any]) -> None:
    try:  # a thread wait under the policy's timeouts
        assert policy.call(wait_here, Bulkhead(1, max_waiting=1)) in ("ok", "fallen back")
    except ResilienceError:
        pass
    for call in (ok, flaky(1), down):
        try:
            assert policy.call(call) in ("ok", "fallen back")
        except (Down, ResilienceError):
            pass
    try:
        assert asyncio.run(policy.call_async(aok)) == "ok"
    except ResilienceError:
        pass


POLICY = Target(
    valid={
        "timeout": st.one_of(st.none(), seconds()),
        "attempt_timeout": st.one_of(st.none(), seconds()),
        "bulkhead": st.one_of(st.none(), counts(1, MAX_CONCURRENT)),
        "retry": st.sampled_from([None, "retry"]),
        "breaker": st.sampled_from([None, "breaker"]),
        "fallback": st.sampled_from([None, "fallback"]),
    },
    build=build_policy,
    use=use_policy,
    aliases={"bulkhead": ("max_concurrent",)},
)


def use_fallback(guard: Any, clock: FakeClock, kwargs: dict[str, Any]) -> None:
    try:
        guard(down)()
    except Down:
        pass  # `on` did not match the error: it propagates unchanged
    assert guard(ok)() == "ok"


FALLBACK = Target(
    valid={
        "on": st.sampled_from(
            [Exception, Down, (Down, ValueError), lambda exc: isinstance(exc, Down)]
        ),
        "value": st.one_of(st.none(), st.integers(), st.text(max_size=5)),
    },
    build=lambda kw, clock: fallback(kw.pop("value", None), **kw),
    use=use_fallback,
)


# ---------------------------------------------------------------------------- HTTP


@dataclass
class Server:
    """A real HTTP server on 127.0.0.1: /busy is 503 with Retry-After, anything else 200."""

    url: str
    headers: list[dict[str, str]]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """One loopback server for the module's transport examples, stopped afterwards."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            seen.append({k.lower(): v for k, v in self.headers.items()})
            busy = self.path.startswith("/busy")
            self.send_response(503 if busy else 200)
            if busy:
                self.send_header("retry-after", "5")
            self.send_header("content-length", "10")
            self.end_headers()
            self.wfile.write(b"x" * 10)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", seen)
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def transport_target(server: Server) -> Target:
    def build(kw: dict[str, Any], clock: FakeClock) -> ResilientTransport:
        return ResilientTransport(sleep=recorder(clock, []), clock=clock, **kw)

    def use(transport: ResilientTransport, clock: FakeClock, kwargs: dict[str, Any]) -> None:
        header = kwargs.get("deadline_header")
        with httpx.Client(transport=transport, timeout=5) as client:
            with deadline(30):
                busy = client.get(f"{server.url}/busy?page=1")
            assert busy.status_code == 503
            assert busy.content == b"x" * 10
            if header is not None:
                assert header.lower() in server.headers[-1]
            assert client.get(f"{server.url}/ok").status_code == 200
            assert client.post(f"{server.url}/ok", content=b"body").status_code == 200

    return Target(
        valid={
            "max_retry_after": seconds(0.0),
            "buffer_limit": counts(0, MAX_BYTES),
            "max_hosts": counts(1, MAX_INTEGER),
            "deadline_header": st.one_of(st.none(), TOKENS),
            "retry_statuses": st.frozensets(st.integers(100, 599), max_size=4),
            "idempotency_keys": st.booleans(),
        },
        build=build,
        use=use,
    )


def use_flask(app: flask.Flask, clock: FakeClock, kwargs: dict[str, Any]) -> None:
    client = app.test_client()
    assert client.get("/fuzz-ok").data == b"ok"
    path = kwargs.get("status_path", "/resilience")
    if path is not None:
        assert "breakers" in client.get(path).get_json()


def build_flask(kw: dict[str, Any], clock: FakeClock) -> flask.Flask:
    app = flask.Flask("fuzz")
    app.add_url_rule("/fuzz-ok", "fuzz_ok", ok)
    Resilience(app, clock=clock, **kw)
    return app


FLASK = Target(
    valid={
        "max_concurrent": st.one_of(st.none(), counts(1, MAX_CONCURRENT)),
        "timeout": st.one_of(st.none(), seconds()),
        "status_path": st.one_of(st.none(), PATHS.filter(lambda p: p != "/fuzz-ok")),
    },
    build=build_flask,
    use=use_flask,
)


# ---------------------------------------------------------------------------- the tests


@pytest.mark.parametrize(
    "target",
    [
        BREAKER,
        RETRY,
        EXPONENTIAL,
        CONSTANT,
        BUDGET,
        BULKHEAD,
        DEADLINE,
        TIMEOUT,
        POLICY,
        FALLBACK,
        FLASK,
    ],
    ids=[
        "CircuitBreaker",
        "Retry",
        "backoff.exponential",
        "backoff.constant",
        "RetryBudget",
        "Bulkhead",
        "deadline",
        "timeout",
        "Policy",
        "fallback",
        "flask.Resilience",
    ],
)
def test_settings_fail_at_construction_or_work(target: Target) -> None:
    """Every setting is a ConfigError naming it, or a component that works on first use."""
    fuzz(target)


def test_transport_settings_fail_at_construction_or_work(server: Server) -> None:
    """Transport settings are a ConfigError, or requests to a real server work with them."""
    fuzz(transport_target(server), examples=HTTP_EXAMPLES)  # five real requests each


REDIS_PORT = 6379


def test_redis_store_settings_fail_at_construction_or_work() -> None:
    """RedisStore settings are a ConfigError, or a shared breaker and budget work with them."""
    prefix = f"test-resilience:fuzz:{uuid.uuid4().hex[:10]}:"
    client = redis.Redis(port=REDIS_PORT, socket_timeout=2)  # stores copy its settings

    def build(kw: dict[str, Any], clock: FakeClock) -> RedisStore:
        return RedisStore(client, prefix=prefix, **kw)

    def use(store: RedisStore, clock: FakeClock, kwargs: dict[str, Any]) -> None:
        try:
            breaker = CircuitBreaker(f"fuzz-{uuid.uuid4().hex[:8]}", store=store)
            assert breaker.call(ok) == "ok"
            budget = store.retry_budget("fuzz", ratio=0.5, ttl=MIN_WINDOW)
            budget.record_call()
            budget.try_spend()
        finally:
            store.close()

    target = Target(
        valid={
            "sync_interval": seconds(MIN_INTERVAL, MAX_SYNC_INTERVAL),
            "timeout": seconds(MIN_INTERVAL, MAX_SOCKET_TIMEOUT),
        },
        build=build,
        use=use,
    )
    try:
        fuzz(target, examples=REDIS_EXAMPLES)  # closing a store takes up to 0.2 s
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
