"""The handling core: one message through dedupe -> policy -> ack / redelivery / dead letter.

For each delivered message (`Subscription.process`):

1. While paused or stopping, the message goes straight back to the queue.
2. The id (``key(message)`` or ``message_id``) is claimed in the dedupe store under the
   consumer's name. Already handled: ack, nothing runs. Claimed by another consumer that
   is still within its lock: look again later through a delay queue (not a try). Store
   unreachable: back to the queue and pause (fail closed: nothing runs).
3. ``handle(message)`` runs through the policy (no `Retry`), under the message's own
   deadline and with the publisher's trace context current.
4. Success: the id is marked done, *then* the message is acked, so a lost ack only causes a
   redelivery that step 2 turns into a no-op. Failure: the claim is released (only success
   marks an id done) and `_decision.after_failure` says what next; the port carries it out.

Pausing: an open breaker's rejection puts the message back (not a try) and pauses the
subscription until the breaker lets a probe through; a successful handling while paused
(the probe) resumes it at once. Each message runs in a task of its own, not in the broker
client's: a connection that drops does not cancel a handler halfway through its effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Generic

from .._breaker._breaker import CircuitState
from .._deadline import deadline
from .._errors import ConfigError, DeadlineExceeded, ResilienceError
from .._idempotency._backend import StoreUnavailable
from .._observe._events import Event, emit, error_name, wanted
from .._policy import Policy
from ._decision import (
    MIN_PAUSE,
    AfterFailure,
    DeadLetter,
    Defer,
    Redeliver,
    Requeue,
    Skip,
    after_claim,
    after_failure,
    store_pause,
)
from ._dedupe import Dedupe
from ._events import (
    ConsumerPaused,
    ConsumerResumed,
    MessageDeadLettered,
    MessageDuplicate,
    MessageRedelivered,
)
from ._headers import (
    DEADLINE,
    deadline_left,
    deferrals,
    deferred_headers,
    failure_headers,
    tries,
)
from ._port import BrokerPort, M
from ._settings import Consumer, Handler, is_async
from ._trace import consumer_span

__all__ = ["ConsumerTrouble", "MissingMessageId", "Subscription"]

BROKER_PAUSE: Final = 1.0
"""Seconds to pause after the broker refused a republish (it is in trouble: do not spin)."""

HANDLED: Final = "handled"
DUPLICATE: Final = "duplicate"
DEFERRED: Final = "deferred"
REQUEUED: Final = "requeued"
REDELIVERED: Final = "redelivered"
DEAD_LETTERED: Final = "dead_lettered"
REJECTED: Final = "rejected"
OUTCOMES: Final = (HANDLED, DUPLICATE, DEFERRED, REQUEUED, REDELIVERED, DEAD_LETTERED, REJECTED)


class MissingMessageId(ResilienceError):
    """A message had no id, so it could not be deduplicated; it is dead-lettered at once.

    Set ``message_id`` when publishing (``publish`` does), or give the `Consumer` a
    ``key=`` function.

    Example:
        >>> from resilience.messaging import MissingMessageId
        >>> str(MissingMessageId("orders"))
        "a message on 'orders' has no message_id (and no key= function gave one)"
    """

    def __init__(self, queue: str) -> None:
        self.queue = queue
        super().__init__(
            f"a message on {queue!r} has no message_id (and no key= function gave one)"
        )

    def __reduce__(self) -> tuple[type[MissingMessageId], tuple[str]]:
        return (type(self), (self.queue,))


# Dead-letter headers name the type as module.QualName: name it where users import it.
MissingMessageId.__module__ = "resilience.messaging"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerTrouble(Event):
    """Something the consumer could not do (``what``); the message is safe, say why not.

    Example:
        >>> ConsumerTrouble(name="o", queue="o", what="complete", error="StoreUnavailable").event
        'consumer.trouble'
    """

    event: ClassVar[str] = "consumer.trouble"
    level: ClassVar[int] = logging.ERROR
    name: str
    queue: str
    what: str
    error: str


def without_retry(policy: Policy) -> Policy:
    """*policy* with its retry slot empty: redelivery through the broker replaces it.

    The other slots are the same live objects (the breaker's window, the bulkhead's permits).
    """
    if policy.retry is None:
        return policy
    total, attempt = policy._timeouts  # the Timeout objects keep the policy's clock
    return Policy(
        timeout=total,
        breaker=policy.breaker,
        attempt_timeout=attempt,
        bulkhead=policy.bulkhead,
        fallback=policy.fallback,
    )


def _invoker(consumer: Consumer, handle: Handler) -> tuple[Callable[[Any], Awaitable[Any]], bool]:
    """The handler wrapped in the policy, as an async callable; and whether it is async."""
    policy = consumer.policy
    wrapped: Callable[[Any], Any] = handle if policy is None else without_retry(policy)(handle)
    if is_async(handle):
        return wrapped, True

    async def in_thread(message: Any) -> Any:
        # A sync handler blocks: a worker thread keeps the event loop (and the broker's
        # heartbeats) going. The deadline and trace context go along (to_thread copies them).
        return await asyncio.to_thread(wrapped, message)

    return in_thread, False


def _check(consumer: object, handle: object) -> None:
    if not isinstance(consumer, Consumer):
        msg = f"consumer must be a resilience.messaging.Consumer, got {consumer!r}"
        raise ConfigError(msg)
    if not callable(handle):
        msg = f"handle must be a function taking the message, got {handle!r}"
        raise ConfigError(msg)


def _expired() -> DeadlineExceeded:
    return DeadlineExceeded("the message's deadline had passed before it was handled")


class Subscription(Generic[M]):
    """A running consumer of one queue, made by a broker adapter's ``consume(...)``.

    ``await subscription.stop()`` stops taking messages and lets those in hand finish;
    ``subscription.paused`` is True while an open breaker (or an unreachable dedupe store)
    keeps it from taking messages; `metrics` counts what happened to the messages.

    Example:
        ```python
        subscription = await consume(channel, "orders", handle, orders)
        ...
        await subscription.stop()
        ```
    """

    def __init__(
        self, consumer: Consumer, handle: Handler, port: BrokerPort[M], queue: str
    ) -> None:
        _check(consumer, handle)
        self._consumer = consumer
        self._port = port
        self._queue = queue
        self._invoke, self._async = _invoker(consumer, handle)
        backend = consumer.backend
        self._dedupe = None if backend is None else Dedupe(backend)
        self._key = consumer.key
        self._wall = consumer.wall_clock
        breaker = consumer.policy.breaker if consumer.policy is not None else None
        self._breaker = breaker
        self._paused = False
        self._pause_reason = ""
        self._stopping = False
        self._timer: asyncio.Task[None] | None = None
        self._switch = asyncio.Lock()
        self._tasks: set[asyncio.Task[str]] = set()
        self._store_outages = 0
        self._counts = dict.fromkeys(OUTCOMES, 0)

    # -- what users read --------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """True while the consumer is not taking messages because of an open breaker."""
        return self._paused

    @property
    def stopped(self) -> bool:
        """True once `stop` was called."""
        return self._stopping

    @property
    def queue(self) -> str:
        """The queue consumed."""
        return self._queue

    @property
    def consumer(self) -> Consumer:
        """The consumer's settings."""
        return self._consumer

    @property
    def in_flight(self) -> int:
        """Messages being handled right now."""
        return len(self._tasks)

    def metrics(self) -> dict[str, int]:
        """How many messages ended each way so far.

        Keys: ``handled`` (success, acked), ``duplicate`` (already handled: acked without
        running), ``deferred`` (held by another consumer or a full bulkhead: looked at again
        later), ``requeued`` (back to the queue, not a try: paused, open breaker, store
        down), ``redelivered`` (failed, comes back after a delay), ``dead_lettered`` and
        ``rejected`` (given up).
        """
        return dict(self._counts)

    async def stop(self) -> None:
        """Stop taking messages and wait for the messages in hand to finish."""
        if not self._stopping:
            self._stopping = True
            timer, self._timer = self._timer, None
            if timer is not None:
                timer.cancel()
            if not self._paused:
                async with self._switch:
                    await self._port.pause()
        while self._tasks:
            await asyncio.gather(*tuple(self._tasks), return_exceptions=True)
        if self._dedupe is not None:
            await self._dedupe.aclose()

    # -- what adapters call -----------------------------------------------------------------

    def deliver(self, message: M) -> asyncio.Task[str]:
        """Handle *message* in a task of the subscription's own (see the module docstring)."""
        task = asyncio.get_running_loop().create_task(self.process(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def process(self, message: M) -> str:
        """Handle one message to its end; returns what happened (a `metrics` key)."""
        if self._refusing():
            await self._port.requeue(message)
            return self._count(REQUEUED)
        port = self._port
        consumer = self._consumer
        headers = port.headers(message)
        tried = tries(headers)
        try:
            message_id = self._key(message) if self._key is not None else port.message_id(message)
        except Exception as exc:
            return await self._give_up(message, headers, exc, DeadLetter(tried + 1, "poison"))
        dedupe = self._dedupe
        token: str | None = None
        key = ""
        if dedupe is not None:
            if not message_id:
                missing = MissingMessageId(self._queue)
                return await self._give_up(
                    message, headers, missing, DeadLetter(tried + 1, "poison")
                )
            key = consumer.scoped(message_id)
            try:
                claim = await dedupe.claim(key, consumer.lock_timeout)
            except StoreUnavailable as exc:
                self._store_outages += 1
                pause = store_pause(exc, self._store_outages)
                return await self._requeue(message, Requeue(pause, "store"))
            self._store_outages = 0
            decision = after_claim(claim, deferrals(headers))
            if isinstance(decision, Skip):
                await port.ack(message)
                if wanted(MessageDuplicate.level):
                    emit(MessageDuplicate(name=consumer.name, queue=self._queue))
                return self._count(DUPLICATE)
            if isinstance(decision, Defer):
                return await self._defer(message, headers, decision)
            token = decision.token
        left = deadline_left(headers, self._wall()) if DEADLINE in headers else None
        try:
            if left is not None and left <= 0.0:
                raise _expired()
            with consumer_span(headers, port.system, self._queue, consumer.name, message_id):
                if left is None:
                    await self._invoke(message)
                elif self._async:
                    async with deadline(left):
                        await self._invoke(message)
                else:
                    with deadline(left):
                        await self._invoke(message)
        except Exception as exc:
            if token is not None:
                await self._release(key, token)
            expired = (
                left is not None
                and isinstance(exc, DeadlineExceeded)
                and (deadline_left(headers, self._wall()) or 0.0) <= 0.0
            )
            return await self._after_failure(
                message,
                headers,
                exc,
                after_failure(exc, tried=tried, consumer=consumer, expired=expired),
            )
        except BaseException:
            # Cancelled (the application is shutting down): free the id so the broker's
            # redelivery runs it, and hand the message back; the cancellation goes on.
            with contextlib.suppress(BaseException):
                if token is not None:
                    await self._release(key, token)
                await port.requeue(message)
            raise
        if token is not None:
            assert dedupe is not None
            try:
                await dedupe.complete(key, token, consumer.ttl)
            except StoreUnavailable as exc:
                # The effect ran: acking now is what keeps it from running again. Only a
                # copy published again after the claim's lock expires could run twice.
                self._trouble("complete", exc)
        await port.ack(message)
        if self._paused:
            await self._probe_succeeded()
        return self._count(HANDLED)

    def _refusing(self) -> bool:
        return self._paused or self._stopping

    # -- the outcomes -----------------------------------------------------------------------

    def _count(self, outcome: str) -> str:
        self._counts[outcome] += 1
        return outcome

    async def _release(self, key: str, token: str) -> None:
        assert self._dedupe is not None
        try:
            await self._dedupe.release(key, token)
        except StoreUnavailable as exc:
            # The claim stays until its lock expires; a redelivery meanwhile is deferred.
            self._trouble("release", exc)

    async def _after_failure(
        self, message: M, headers: Mapping[str, Any], exc: Exception, decision: AfterFailure
    ) -> str:
        if isinstance(decision, Requeue):
            return await self._requeue(message, decision)
        if isinstance(decision, Defer):
            return await self._defer(message, headers, decision)
        if isinstance(decision, Redeliver):
            new_headers = failure_headers(
                headers,
                exc=exc,
                attempts=decision.attempts,
                queue=self._queue,
                wall_now=self._wall(),
            )
            try:
                await self._port.redeliver(message, decision.delay, new_headers)
            except Exception as trouble:
                return await self._republish_failed(message, trouble)
            if wanted(MessageRedelivered.level):
                emit(
                    MessageRedelivered(
                        name=self._consumer.name,
                        queue=self._queue,
                        attempt=decision.attempts,
                        delay=decision.delay,
                        error=error_name(exc),
                    )
                )
            return self._count(REDELIVERED)
        return await self._give_up(message, headers, exc, decision)

    async def _give_up(
        self, message: M, headers: Mapping[str, Any], exc: BaseException, decision: DeadLetter
    ) -> str:
        if self._consumer.dead_letter:
            new_headers = failure_headers(
                headers,
                exc=exc,
                attempts=decision.attempts,
                queue=self._queue,
                wall_now=self._wall(),
            )
            try:
                await self._port.dead_letter(message, new_headers)
            except Exception as trouble:
                return await self._republish_failed(message, trouble)
            outcome = DEAD_LETTERED
        else:
            await self._port.reject(message)
            outcome = REJECTED
        emit(
            MessageDeadLettered(
                name=self._consumer.name,
                queue=self._queue,
                attempts=decision.attempts,
                reason=decision.reason,
                error=error_name(exc),
            )
        )
        return self._count(outcome)

    async def _defer(self, message: M, headers: Mapping[str, Any], decision: Defer) -> str:
        try:
            await self._port.redeliver(message, decision.delay, deferred_headers(headers))
        except Exception as trouble:
            return await self._republish_failed(message, trouble)
        return self._count(DEFERRED)

    async def _requeue(self, message: M, decision: Requeue) -> str:
        # Paused before the message goes back: the broker may hand it straight to us again.
        newly = self._mark_paused(decision.pause, decision.reason)
        await self._port.requeue(message)
        if newly:
            async with self._switch:
                if self._paused and not self._stopping:
                    await self._port.pause()
        return self._count(REQUEUED)

    async def _republish_failed(self, message: M, trouble: Exception) -> str:
        self._trouble("republish", trouble)
        return await self._requeue(message, Requeue(BROKER_PAUSE, "broker"))

    def _trouble(self, what: str, exc: BaseException) -> None:
        emit(
            ConsumerTrouble(
                name=self._consumer.name, queue=self._queue, what=what, error=error_name(exc)
            )
        )

    # -- pause and resume -------------------------------------------------------------------

    def _mark_paused(self, seconds: float, reason: str) -> bool:
        """Pause (or extend the pause) for *seconds*; True when the consumer was running."""
        if self._stopping:
            return False
        timer = self._timer
        if timer is not None:
            timer.cancel()
        self._pause_reason = reason
        self._timer = asyncio.get_running_loop().create_task(
            self._resume_after(max(seconds, MIN_PAUSE))
        )
        if self._paused:
            return False
        self._paused = True
        emit(
            ConsumerPaused(
                name=self._consumer.name, queue=self._queue, seconds=seconds, reason=reason
            )
        )
        return True

    async def _resume_after(self, seconds: float) -> None:
        await self._consumer.asleep(seconds)
        self._timer = None
        await self._resume()

    async def _probe_succeeded(self) -> None:
        """A handling succeeded while paused: resume now if the breaker lets calls through."""
        breaker = self._breaker
        if (
            self._pause_reason == "breaker"
            and breaker is not None
            and breaker.state in (CircuitState.OPEN, CircuitState.FORCED_OPEN)
        ):
            return
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        await self._resume()

    async def _resume(self) -> None:
        async with self._switch:
            if not self._paused or self._stopping:
                return
            self._paused = False
            try:
                await self._port.resume()
            except Exception as exc:
                # Not subscribed (the connection is down, or the broker did not answer in
                # time): make sure of it, and try again shortly.
                self._trouble("resume", exc)
                await self._port.pause()
                self._mark_paused(BROKER_PAUSE, "broker")
                return
        emit(ConsumerResumed(name=self._consumer.name, queue=self._queue))

    def __repr__(self) -> str:
        state = "stopped" if self._stopping else "paused" if self._paused else "running"
        return f"<Subscription {self._consumer.name!r} on {self._queue!r}: {state}>"
