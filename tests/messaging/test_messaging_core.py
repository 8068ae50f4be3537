"""The broker-neutral messaging core: settings, decisions, headers, and one message's handling.

A fake broker port records what the core asks of it; no broker, no network, no real sleeps.
"""

from __future__ import annotations

import asyncio
import doctest
import importlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry import trace

from resilience import (
    Bulkhead,
    BulkheadFull,
    CircuitBreaker,
    CircuitOpenError,
    ConfigError,
    DeadlineExceeded,
    Policy,
    Retry,
    backoff,
    deadline,
    remaining,
)
from resilience._idempotency._backend import Busy, Claimed, Done, StoreUnavailable
from resilience._messaging._decision import (
    DeadLetter,
    Defer,
    Redeliver,
    Requeue,
    Run,
    Skip,
    after_claim,
    after_failure,
    defer_delay,
)
from resilience._messaging._headers import (
    deadline_left,
    error_message,
    failure_headers,
    outgoing_headers,
    tries,
)
from resilience.events import Event, add_listener, remove_listener
from resilience.messaging import (
    Consumer,
    ConsumerPaused,
    ConsumerResumed,
    ConsumerTrouble,
    MessageDeadLettered,
    MissingMessageId,
    Subscription,
)
from resilience.stores import MemoryStore
from resilience.testing import FakeClock

WALL = 1_800_000_000.0


@dataclass
class Msg:
    """A message as a broker adapter would hand it over."""

    body: str
    message_id: str | None = "m1"
    headers: dict[str, Any] = field(default_factory=dict)


class FakePort:
    """Records every request of the core, in order, in `log`."""

    system = "fake"

    def __init__(self, log: list[tuple[Any, ...]] | None = None) -> None:
        self.log: list[tuple[Any, ...]] = [] if log is None else log
        self.fail_republish: Exception | None = None
        self.fail_resume: Exception | None = None

    def message_id(self, message: Msg) -> str | None:
        return message.message_id

    def headers(self, message: Msg) -> Mapping[str, Any]:
        return message.headers

    async def ack(self, message: Msg) -> None:
        self.log.append(("ack", message.body))

    async def requeue(self, message: Msg) -> None:
        self.log.append(("requeue", message.body))

    async def reject(self, message: Msg) -> None:
        self.log.append(("reject", message.body))

    async def redeliver(self, message: Msg, delay: float, headers: dict[str, Any]) -> None:
        if self.fail_republish is not None:
            raise self.fail_republish
        self.log.append(("redeliver", message.body, delay, headers))

    async def dead_letter(self, message: Msg, headers: dict[str, Any]) -> None:
        if self.fail_republish is not None:
            raise self.fail_republish
        self.log.append(("dead_letter", message.body, headers))

    async def pause(self) -> None:
        self.log.append(("pause",))

    async def resume(self) -> None:
        if self.fail_resume is not None:
            raise self.fail_resume
        self.log.append(("resume",))

    def actions(self) -> list[str]:
        return [entry[0] for entry in self.log]


class Sleeps:
    """An injectable async sleep that returns only when the test says so."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self._go: asyncio.Event | None = None

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        if self._go is None:
            self._go = asyncio.Event()
        await self._go.wait()
        self._go = None

    def wake(self) -> None:
        assert self._go is not None, "nobody is sleeping"
        self._go.set()


class Events:
    """Collects the library's events while the test runs."""

    def __init__(self) -> None:
        self.seen: list[Event] = []

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.seen if isinstance(e, kind)]


@pytest.fixture
def events() -> Any:
    """Every event emitted during the test."""
    sink = Events()
    add_listener(sink.seen.append)
    yield sink
    remove_listener(sink.seen.append)


def consumer(**options: Any) -> Consumer:
    """A consumer with short delays and a fixed wall clock unless the test says otherwise."""
    options.setdefault("redelivery", (0.5, 2.0))
    options.setdefault("wall_clock", lambda: WALL)
    return Consumer("orders", **options)


def subscription(c: Consumer, handle: Any, port: FakePort | None = None) -> Subscription[Msg]:
    return Subscription(c, handle, port or FakePort(), "orders")


# -- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"redelivery": "1,2"}, "redelivery"),
        ({"redelivery": (1.0, -1.0)}, r"redelivery\[1\]"),
        ({"redelivery": (float("nan"),)}, r"redelivery\[0\]"),
        ({"redelivery": (5e9,)}, r"redelivery\[0\] must be at most"),
        ({"poison": "ValueError"}, "poison"),
        ({"policy": "strict"}, "policy"),
        ({"dead_letter": "yes"}, "dead_letter"),
        ({"key": 42}, "key"),
        ({"ttl": 0}, "ttl"),
        ({"lock_timeout": -1}, "lock_timeout"),
        ({"dedupe": object()}, "dedupe"),
        ({"asleep": None}, "asleep"),
        ({"policy": Policy(timeout=90.0)}, r"lock_timeout must be longer than the policy's"),
    ],
)
def test_bad_settings_raise_config_error_naming_them(options: dict[str, Any], names: str) -> None:
    """Each invalid setting fails at construction with a ConfigError that names it."""
    with pytest.raises(ConfigError, match=names):
        Consumer("orders", **options)


def test_an_empty_name_is_refused() -> None:
    """The name scopes message ids: it must be a non-empty string."""
    with pytest.raises(ConfigError, match="name"):
        Consumer("")


def test_settings_are_normalised_and_shown() -> None:
    """Delays accept timedelta; max_tries is 1 + len(redelivery); the repr shows the settings."""
    c = Consumer("orders", redelivery=[timedelta(seconds=1), 0], poison=ValueError)
    assert c.redelivery == (1.0, 0.0)
    assert c.max_tries == 3
    assert c.scoped("42") == "message:orders:42"
    assert repr(c) == (
        "Consumer('orders', redelivery=(1.0, 0.0), dead_letter=True, poison=<class 'ValueError'>)"
    )


# -- decisions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wait", "expected"),
    [(0.0, 0.1), (0.1, 0.1), (0.11, 0.2), (0.4, 0.4), (0.41, 0.8), (59.0, 102.4), (1e6, 102.4)],
)
def test_defer_delay_covers_the_wait_with_few_queues(wait: float, expected: float) -> None:
    """A deferral waits the next 0.1 s x 2^k at least as long as asked, bounded."""
    assert defer_delay(wait) == pytest.approx(expected)


def test_after_claim_maps_each_claim_result() -> None:
    """Claimed runs with its token, Done skips, Busy defers past the other owner's lock."""
    assert after_claim(Claimed("tok")) == Run("tok")
    assert after_claim(Done("", b"")) == Skip()
    assert after_claim(Busy("", 1.5)) == Defer(0.1, "busy")


def test_a_busy_message_is_looked_at_again_sooner_first_then_less_often() -> None:
    """Deferrals back off 0.1, 0.2, 0.4... s, never past the other owner's lock expiry."""
    waits = [after_claim(Busy("", 1.5), deferrals=n) for n in range(6)]
    assert all(isinstance(wait, Defer) and wait.reason == "busy" for wait in waits)
    delays = [wait.delay for wait in waits if isinstance(wait, Defer)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 1.6])


def test_after_failure_counts_tries_until_the_dead_letters() -> None:
    """Try n (n <= len(redelivery)) waits redelivery[n-1]; the try after the last dead-letters."""
    c = consumer(redelivery=(0.5, 2.0))
    assert after_failure(OSError(), tried=0, consumer=c) == Redeliver(0.5, 1)
    assert after_failure(OSError(), tried=1, consumer=c) == Redeliver(2.0, 2)
    assert after_failure(OSError(), tried=2, consumer=c) == DeadLetter(3, "exhausted")
    assert after_failure(OSError(), tried=7, consumer=c) == DeadLetter(8, "exhausted")


def test_after_failure_poison_expired_and_rejections() -> None:
    """Poison and expiry dead-letter at once; breaker and bulkhead rejections are not tries."""
    c = consumer(poison=(KeyError,))
    assert after_failure(KeyError("k"), tried=0, consumer=c) == DeadLetter(1, "poison")
    assert after_failure(OSError(), tried=0, consumer=c, expired=True) == DeadLetter(1, "expired")
    assert after_failure(CircuitOpenError("db", 3.0), tried=1, consumer=c) == Requeue(
        3.0, "breaker"
    )
    assert after_failure(CircuitOpenError("db", None), tried=0, consumer=c) == Requeue(
        5.0, "breaker"
    )
    assert after_failure(BulkheadFull("b"), tried=0, consumer=c) == Defer(0.1, "bulkhead")


def test_no_redelivery_dead_letters_the_first_failure() -> None:
    """redelivery=() means one try."""
    c = consumer(redelivery=())
    assert after_failure(OSError(), tried=0, consumer=c) == DeadLetter(1, "exhausted")


# -- headers -------------------------------------------------------------------------------


def test_outgoing_headers_carry_the_deadline_as_an_absolute_time() -> None:
    """Inside deadline(s) the header is now + remaining, in epoch ms; an earlier given one stays."""
    with deadline(2.0):
        headers = outgoing_headers({"x-deadline": int(WALL * 1000) + 500}, WALL)
        assert headers["x-deadline"] == int(WALL * 1000) + 500
        headers = outgoing_headers(None, WALL)
    assert int(WALL * 1000) + 1900 <= headers["x-deadline"] <= int(WALL * 1000) + 2000
    assert "x-deadline" not in outgoing_headers({}, WALL)


def test_outgoing_headers_refuse_a_deadline_already_spent() -> None:
    """With under a millisecond left, publishing is refused before anything is sent."""
    clock = FakeClock()
    with deadline(0.0005, clock=clock), pytest.raises(DeadlineExceeded, match="publishing"):
        outgoing_headers({}, WALL)


def test_outgoing_headers_inject_the_current_trace_context() -> None:
    """The active span's context is written as a W3C traceparent."""
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("parent") as span:
        headers = outgoing_headers({}, WALL)
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert headers["traceparent"].split("-")[1] == trace_id


@pytest.mark.parametrize("value", ["soon", b"\xff", None, True, -5, float("nan"), {"a": 1}, 0])
def test_malformed_incoming_headers_are_ignored(value: object) -> None:
    """A header another program filled with junk is treated as absent, never an error."""
    assert deadline_left({"x-deadline": value}, WALL) is None
    assert tries({"x-attempts": value}) == 0


def test_incoming_headers_accept_text_numbers() -> None:
    """Numbers written as text (other clients do) are read."""
    assert tries({"x-attempts": b"3"}) == 3
    assert deadline_left({"x-deadline": str(int(WALL * 1000) + 1500)}, WALL) == pytest.approx(1.5)


def test_failure_headers_keep_the_first_failure_and_drop_the_brokers_history() -> None:
    """The first failure time survives redeliveries; x-death and friends are not copied."""
    first = failure_headers({}, exc=OSError("a"), attempts=1, queue="q", wall_now=WALL)
    again = failure_headers(
        {**first, "x-death": [{}], "x-first-death-queue": "q.delay.500", "app": "kept"},
        exc=TimeoutError("b"),
        attempts=2,
        queue="q",
        wall_now=WALL + 61.5,
    )
    assert again["x-first-failure"] == first["x-first-failure"] == "2027-01-15T08:00:00.000Z"
    assert again["x-last-failure"] == "2027-01-15T08:01:01.500Z"
    assert again["x-attempts"] == 2
    assert again["x-error-type"] == "builtins.TimeoutError"
    assert again["x-error-message"] == "b"
    assert again["x-original-queue"] == "q"
    assert again["app"] == "kept"
    assert "x-death" not in again
    assert "x-first-death-queue" not in again


def test_error_messages_lose_url_credentials_and_length() -> None:
    """A password in a URL never reaches the dead letters; long messages are cut."""
    text = error_message(OSError("GET https://bob:s3cret@api.example/x?token=abc failed"))
    assert "s3cret" not in text
    assert "abc" not in text
    assert len(error_message(ValueError("x" * 5000))) == 1000


# -- one message through the core ----------------------------------------------------------


async def test_a_message_runs_once_and_a_duplicate_is_acked_without_running() -> None:
    """Success marks the id done then acks; the same id again is acked and not run."""
    calls: list[str] = []
    store = MemoryStore()
    port = FakePort()
    sub = subscription(consumer(dedupe=store), lambda m: calls.append(m.body), port)
    assert await sub.process(Msg("first")) == "handled"
    assert await sub.process(Msg("again")) == "duplicate"
    assert calls == ["first"]
    assert port.actions() == ["ack", "ack"]
    assert isinstance(store.claim("message:orders:m1", "", 60.0), Done)


async def test_ids_are_scoped_by_the_consumers_name() -> None:
    """Two consumers with different names handle the same message id independently."""
    store = MemoryStore()
    seen: list[str] = []
    a = subscription(Consumer("billing", dedupe=store), lambda m: seen.append("billing"))
    b = subscription(Consumer("shipping", dedupe=store), lambda m: seen.append("shipping"))
    assert await a.process(Msg("x")) == "handled"
    assert await b.process(Msg("x")) == "handled"
    assert sorted(seen) == ["billing", "shipping"]


async def test_the_id_is_recorded_before_the_ack() -> None:
    """The effect is recorded in the store first, then the message is acked."""
    log: list[tuple[Any, ...]] = []

    class Recording(MemoryStore):
        async def acomplete(self, key: str, token: str, value: bytes, ttl: float) -> None:
            log.append(("complete", key))
            await super().acomplete(key, token, value, ttl)

    sub = subscription(consumer(dedupe=Recording()), lambda m: None, FakePort(log))
    await sub.process(Msg("a"))
    assert [entry[0] for entry in log] == ["complete", "ack"]


async def test_a_failure_is_redelivered_with_its_history_and_the_id_released() -> None:
    """A failed try goes back through the first delay with failure headers; the id stays free."""
    store = MemoryStore()
    port = FakePort()

    async def handle(message: Msg) -> None:
        raise ConnectionError("db down")

    sub = subscription(consumer(dedupe=store), handle, port)
    assert await sub.process(Msg("a")) == "redelivered"
    (action, _, delay, headers) = port.log[0]
    assert (action, delay) == ("redeliver", 0.5)
    assert headers["x-attempts"] == 1
    assert headers["x-error-type"] == "builtins.ConnectionError"
    assert headers["x-error-message"] == "db down"
    assert headers["x-original-queue"] == "orders"
    assert headers["x-first-failure"] == headers["x-last-failure"]
    assert isinstance(store.claim("message:orders:m1", "", 60.0), Claimed)


async def test_a_message_is_tried_at_most_one_plus_len_redelivery_times() -> None:
    """Following the headers it carries, a failing message is tried 3 times, then dead-lettered."""
    calls = 0

    def handle(message: Msg) -> None:
        nonlocal calls
        calls += 1
        raise TimeoutError("slow")

    port = FakePort()
    sub = subscription(consumer(dedupe=MemoryStore()), handle, port)
    message = Msg("a", headers={"app": "v"})
    outcomes = []
    for _ in range(5):
        outcomes.append(await sub.process(message))
        last = port.log[-1]
        if last[0] != "redeliver":
            break
        message = Msg("a", headers=last[3])
    assert outcomes == ["redelivered", "redelivered", "dead_lettered"]
    assert calls == 3
    assert [entry[2] for entry in port.log[:2]] == [0.5, 2.0]
    dead = port.log[-1][2]
    assert dead["x-attempts"] == 3
    assert dead["app"] == "v"


async def test_poison_goes_to_the_dead_letters_at_once(events: Events) -> None:
    """An exception listed in poison is dead-lettered on the first try, with an event."""
    port = FakePort()

    def handle(message: Msg) -> None:
        raise ValueError("not JSON")

    sub = subscription(consumer(poison=(ValueError,)), handle, port)
    assert await sub.process(Msg("a")) == "dead_lettered"
    assert port.log[0][0] == "dead_letter"
    assert port.log[0][2]["x-attempts"] == 1
    [event] = events.of(MessageDeadLettered)
    assert (event.reason, event.attempts, event.error) == ("poison", 1, "ValueError")


async def test_without_dead_letters_a_given_up_message_is_rejected() -> None:
    """dead_letter=False rejects, so the queue's own dead-letter exchange (if any) applies."""
    port = FakePort()

    def handle(message: Msg) -> None:
        raise OSError

    sub = subscription(consumer(redelivery=(), dead_letter=False), handle, port)
    assert await sub.process(Msg("a")) == "rejected"
    assert port.actions() == ["reject"]


async def test_only_success_marks_an_id_done() -> None:
    """After a failure the redelivery runs again, and only then is the id done."""
    store = MemoryStore()
    port = FakePort()
    results = iter([OSError("first"), None])

    def handle(message: Msg) -> None:
        error = next(results)
        if error is not None:
            raise error

    sub = subscription(consumer(dedupe=store), handle, port)
    await sub.process(Msg("a"))
    assert await sub.process(Msg("a", headers=port.log[0][3])) == "handled"
    assert await sub.process(Msg("a")) == "duplicate"


async def test_a_message_held_by_another_consumer_is_deferred_not_tried() -> None:
    """A live claim elsewhere: the message waits past that lock in a delay queue, not a try."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    store.claim("message:orders:m1", "", 60.0)  # another consumer is handling it
    clock.advance(59.75)
    calls: list[Msg] = []
    port = FakePort()
    sub = subscription(consumer(dedupe=store), calls.append, port)
    assert await sub.process(Msg("a", headers={"x-death": [{}], "k": "v"})) == "deferred"
    assert calls == []
    (action, _, delay, headers) = port.log[0]
    assert action == "redeliver"
    assert delay == pytest.approx(0.1)
    assert headers == {"k": "v", "x-deferrals": 1}  # no failure recorded: not a try
    clock.advance(0.5)  # that consumer died; its lock has expired
    assert await sub.process(Msg("a", headers=headers)) == "handled"
    assert len(calls) == 1


async def test_an_unreachable_store_runs_nothing_and_pauses(events: Events) -> None:
    """Fail closed: the message goes back untried and the consumer pauses, doubling the wait."""

    class Down(MemoryStore):
        async def aclaim(self, key: str, fingerprint: str, lock_timeout: float) -> Any:
            raise StoreUnavailable("test store", retry_after=0.5)

    calls: list[Msg] = []
    port = FakePort()
    sleeps = Sleeps()
    sub = subscription(consumer(dedupe=Down(), asleep=sleeps), calls.append, port)
    assert await sub.process(Msg("a")) == "requeued"
    assert sub.paused
    assert calls == []
    assert port.actions() == ["requeue", "pause"]
    [paused] = events.of(ConsumerPaused)
    assert (paused.reason, paused.seconds) == ("store", 0.5)
    await asyncio.sleep(0)
    sleeps.wake()
    for _ in range(10):
        await asyncio.sleep(0)
    assert not sub.paused
    assert await sub.process(Msg("b")) == "requeued"
    assert events.of(ConsumerPaused)[-1].seconds == 1.0  # the second outage in a row


async def test_an_open_breaker_requeues_without_a_try_and_pauses_until_a_probe(
    events: Events,
) -> None:
    """Open breaker: the message goes back (not a try), the consumer pauses, others are requeued."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        "msg-core-open", consecutive_failures=1, open_duration=3.0, clock=clock
    )
    down = True
    calls: list[str] = []

    def handle(message: Msg) -> None:
        calls.append(message.body)
        if down:
            raise ConnectionError("db down")

    port = FakePort()
    sleeps = Sleeps()
    c = consumer(policy=Policy(breaker=breaker), asleep=sleeps)
    sub = subscription(c, handle, port)
    assert await sub.process(Msg("a")) == "redelivered"  # the failure that opens it
    assert await sub.process(Msg("b")) == "requeued"
    assert calls == ["a"]
    assert sub.paused
    assert port.actions() == ["redeliver", "requeue", "pause"]
    assert await sub.process(Msg("c")) == "requeued"  # arrived before the pause took effect
    await asyncio.sleep(0)
    assert sleeps.asked == [3.0]
    assert events.of(ConsumerPaused)[0].reason == "breaker"
    clock.advance(3.0)
    down = False
    sleeps.wake()
    for _ in range(10):
        await asyncio.sleep(0)
    assert not sub.paused
    assert port.actions()[-1] == "resume"
    assert await sub.process(Msg("b")) == "handled"  # the probe
    assert len(events.of(ConsumerResumed)) == 1


async def test_a_successful_probe_resumes_at_once() -> None:
    """While paused, a handling that succeeds (the breaker closed) resumes without waiting."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        "msg-core-probe", consecutive_failures=1, open_duration=3.0, clock=clock
    )
    port = FakePort()
    sleeps = Sleeps()
    release = asyncio.Event()

    async def handle(message: Msg) -> None:
        if message.body == "slow":
            await release.wait()  # started before the breaker opened
            return
        raise ConnectionError

    sub = subscription(consumer(policy=Policy(breaker=breaker), asleep=sleeps), handle, port)
    slow = sub.deliver(Msg("slow"))
    await asyncio.sleep(0)
    await sub.process(Msg("a"))  # opens the breaker
    await sub.process(Msg("b"))  # rejected: pause
    assert sub.paused
    breaker.reset()  # the downstream is back
    release.set()
    assert await slow == "handled"
    assert not sub.paused
    assert port.actions()[-1] == "resume"


async def test_a_success_while_the_breaker_is_still_open_does_not_resume() -> None:
    """A slow handling that ends well while the breaker is open leaves the pause alone."""
    breaker = CircuitBreaker("msg-core-still", consecutive_failures=1, open_duration=30.0)
    release = asyncio.Event()

    async def handle(message: Msg) -> None:
        if message.body == "slow":
            await release.wait()
            return
        raise ConnectionError

    port = FakePort()
    sub = subscription(consumer(policy=Policy(breaker=breaker), asleep=Sleeps()), handle, port)
    slow = sub.deliver(Msg("slow"))
    await asyncio.sleep(0)
    await sub.process(Msg("a"))
    await sub.process(Msg("b"))
    release.set()
    assert await slow == "handled"
    assert sub.paused
    assert "resume" not in port.actions()


async def test_a_resume_that_fails_pauses_again() -> None:
    """Subscribing again while the broker is unreachable keeps the consumer paused and retries."""
    breaker = CircuitBreaker("msg-core-resume", consecutive_failures=1, open_duration=1.0)
    port = FakePort()
    sleeps = Sleeps()

    def handle(message: Msg) -> None:
        raise ConnectionError

    sub = subscription(consumer(policy=Policy(breaker=breaker), asleep=sleeps), handle, port)
    await sub.process(Msg("a"))
    await sub.process(Msg("b"))
    port.fail_resume = ConnectionError("broker away")
    await asyncio.sleep(0)
    sleeps.wake()
    for _ in range(10):
        await asyncio.sleep(0)
    assert sub.paused
    assert port.actions()[-1] == "pause"  # in case the subscription was made after all
    assert sleeps.asked[-1] == 1.0
    port.fail_resume = None
    sleeps.wake()
    for _ in range(10):
        await asyncio.sleep(0)
    assert not sub.paused
    assert port.actions()[-1] == "resume"


async def test_the_policys_retry_is_not_used() -> None:
    """A Retry in the policy is ignored: one call per delivery, redelivery does the rest."""
    calls = 0

    async def handle(message: Msg) -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError

    policy = Policy(retry=Retry(on=ConnectionError, attempts=5, backoff=backoff.none()))
    port = FakePort()
    sub = subscription(consumer(policy=policy), handle, port)
    assert await sub.process(Msg("a")) == "redelivered"
    assert calls == 1


async def test_the_policys_timeout_counts_as_a_failure() -> None:
    """attempt_timeout cancels a slow async handler; that try is redelivered."""

    async def handle(message: Msg) -> None:
        await asyncio.sleep(30)

    port = FakePort()
    sub = subscription(consumer(policy=Policy(attempt_timeout=0.05)), handle, port)
    assert await sub.process(Msg("a")) == "redelivered"
    assert port.log[0][3]["x-error-type"] == "resilience.DeadlineExceeded"


async def test_a_full_bulkhead_defers_without_a_try() -> None:
    """BulkheadFull means "not now": the message comes back later, its tries untouched."""
    port = FakePort()
    bulkhead = Bulkhead(1)
    gate = asyncio.Event()

    async def handle(message: Msg) -> None:
        await gate.wait()

    sub = subscription(consumer(policy=Policy(bulkhead=bulkhead)), handle, port)
    first = sub.deliver(Msg("a"))
    await asyncio.sleep(0)
    assert await sub.process(Msg("b")) == "deferred"
    assert port.log[0][2:] == (0.1, {"x-deferrals": 1})
    gate.set()
    assert await first == "handled"


async def test_a_message_without_an_id_is_dead_lettered_when_deduping() -> None:
    """No message_id and no key=: it cannot be deduplicated, so it is not run."""
    port = FakePort()
    calls: list[Msg] = []
    sub = subscription(consumer(dedupe=MemoryStore()), calls.append, port)
    assert await sub.process(Msg("a", message_id=None)) == "dead_lettered"
    assert calls == []
    assert port.log[0][2]["x-error-type"] == "resilience.messaging.MissingMessageId"
    assert isinstance(MissingMessageId("q"), Exception)
    # Without dedupe there is nothing to key: it runs.
    plain = subscription(consumer(), calls.append, FakePort())
    assert await plain.process(Msg("b", message_id=None)) == "handled"


async def test_a_key_function_gives_the_id_and_its_errors_are_poison() -> None:
    """key(message) replaces message_id; a key that raises dead-letters the message."""
    store = MemoryStore()
    calls: list[str] = []

    def key(message: Msg) -> str:
        return message.body.split(":")[0]

    sub = subscription(consumer(dedupe=store, key=key), lambda m: calls.append(m.body))
    assert await sub.process(Msg("7:first", message_id="x")) == "handled"
    assert await sub.process(Msg("7:second", message_id="y")) == "duplicate"
    assert calls == ["7:first"]

    def broken(message: Msg) -> str:
        raise KeyError("order_id")

    port = FakePort()
    bad = subscription(consumer(dedupe=store, key=broken), calls.append, port)
    assert await bad.process(Msg("z")) == "dead_lettered"
    assert port.log[0][2]["x-error-type"] == "builtins.KeyError"


async def test_the_messages_deadline_bounds_the_handler() -> None:
    """The handler runs under the deadline the publisher sent; a passed one is not run."""
    seen: list[float | None] = []

    async def handle(message: Msg) -> None:
        seen.append(remaining())

    port = FakePort()
    sub = subscription(consumer(), handle, port)
    ahead = {"x-deadline": int((WALL + 5.0) * 1000)}
    assert await sub.process(Msg("a", headers=ahead)) == "handled"
    assert seen[0] is not None
    assert 0 < seen[0] <= 5.0
    passed = {"x-deadline": int((WALL - 1.0) * 1000)}
    assert await sub.process(Msg("b", headers=passed)) == "dead_lettered"
    assert len(seen) == 1
    assert port.log[-1][2]["x-error-type"] == "resilience.DeadlineExceeded"


async def test_a_sync_handler_runs_in_a_thread_under_the_deadline() -> None:
    """A blocking handler does not block the event loop and still sees the message's deadline."""
    threads: list[int] = []
    budgets: list[float | None] = []

    def handle(message: Msg) -> None:
        threads.append(threading.get_ident())
        budgets.append(remaining())

    sub = subscription(consumer(), handle)
    headers = {"x-deadline": int((WALL + 5.0) * 1000)}
    assert await sub.process(Msg("a", headers=headers)) == "handled"
    assert threads != [threading.get_ident()]
    assert budgets[0] is not None
    assert budgets[0] <= 5.0


async def test_the_publishers_trace_context_is_current_in_the_handler() -> None:
    """Without an SDK the handler still runs in the publisher's trace (for outgoing calls)."""
    trace_ids: list[str] = []

    async def handle(message: Msg) -> None:
        trace_ids.append(format(trace.get_current_span().get_span_context().trace_id, "032x"))

    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    sub = subscription(consumer(), handle)
    await sub.process(Msg("a", headers={"traceparent": parent}))
    assert trace_ids == ["0af7651916cd43dd8448eb211c80319c"]
    assert trace.get_current_span().get_span_context().trace_id == 0


async def test_a_failed_republish_puts_the_message_back_and_pauses(events: Events) -> None:
    """When the broker refuses the copy, the original is requeued and the consumer backs off."""
    port = FakePort()
    port.fail_republish = OSError("broker refused")

    def handle(message: Msg) -> None:
        raise ConnectionError

    sub = subscription(consumer(asleep=Sleeps()), handle, port)
    assert await sub.process(Msg("a")) == "requeued"
    assert port.actions() == ["requeue", "pause"]
    [trouble] = events.of(ConsumerTrouble)
    assert (trouble.what, trouble.error) == ("republish", "OSError")


async def test_an_unrecorded_success_is_still_acked(events: Events) -> None:
    """The effect ran: if the store cannot record it, the ack still goes (so it is not rerun)."""

    class Flaky(MemoryStore):
        async def acomplete(self, key: str, token: str, value: bytes, ttl: float) -> None:
            raise StoreUnavailable("test store")

    port = FakePort()
    sub = subscription(consumer(dedupe=Flaky()), lambda m: None, port)
    assert await sub.process(Msg("a")) == "handled"
    assert port.actions() == ["ack"]
    assert events.of(ConsumerTrouble)[0].what == "complete"


async def test_stop_lets_the_message_in_hand_finish_and_takes_no_more() -> None:
    """stop() unsubscribes, waits for running handlers, and later messages go back."""
    gate = asyncio.Event()
    port = FakePort()

    async def handle(message: Msg) -> None:
        await gate.wait()

    sub = subscription(consumer(), handle, port)
    running = sub.deliver(Msg("a"))
    await asyncio.sleep(0)
    stopping = asyncio.ensure_future(sub.stop())
    await asyncio.sleep(0.01)
    assert not stopping.done()
    assert sub.stopped
    assert await sub.process(Msg("b")) == "requeued"
    gate.set()
    await stopping
    assert running.result() == "handled"
    assert port.actions() == ["pause", "requeue", "ack"]
    assert sub.metrics()["handled"] == 1
    assert repr(sub) == "<Subscription 'orders' on 'orders': stopped>"


async def test_cancelling_a_handling_frees_the_id_and_requeues() -> None:
    """A handling cancelled by the application releases its claim and hands the message back."""
    store = MemoryStore()
    port = FakePort()
    started = asyncio.Event()

    async def handle(message: Msg) -> None:
        started.set()
        await asyncio.sleep(30)

    sub = subscription(consumer(dedupe=store), handle, port)
    task = sub.deliver(Msg("a"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert port.actions() == ["requeue"]
    assert isinstance(store.claim("message:orders:m1", "", 60.0), Claimed)


def test_subscription_checks_its_arguments() -> None:
    """A Subscription needs a Consumer and a callable handler."""
    with pytest.raises(ConfigError, match="consumer"):
        Subscription("orders", print, FakePort(), "q")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="handle"):
        Subscription(Consumer("x"), "print", FakePort(), "q")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "module",
    [
        "resilience.messaging",
        "resilience._messaging._settings",
        "resilience._messaging._decision",
        "resilience._messaging._headers",
        "resilience._messaging._handling",
        "resilience._messaging._events",
    ],
)
def test_docstring_examples_run(module: str) -> None:
    """The examples in the messaging modules' docstrings are right."""
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
