"""Breaker state shared through Redis, without a Redis round trip per call.

Design (see docs/shared-state.md):

* Calls never talk to Redis on the happy path. Each process keeps counting in its own window;
  one daemon *sync thread* per store wakes every ``sync_interval`` and, in one pipeline,
  publishes this process's window of each *active* breaker (HSET, only when it changed) and
  reads its hash (HGETALL: the fleet state and the other processes' windows). The breaker
  adds the others' counts when it decides, so the window that trips is the fleet's.
* Idle breakers cost (almost) nothing: a breaker is read every tick only while its window
  changes or it is HALF_OPEN; the others are looked at every `_IDLE_CHECK` seconds, locally, and
  their keys' TTL is renewed every quarter TTL. One heartbeat field per process says it is
  alive, so an idle process's unchanged window keeps counting for the others.
* The fleet state is in the same hash: ``state, epoch, until``. Every write goes through a
  Lua script that bumps the epoch; automatic transitions are compare-and-set on the epoch the
  process last saw, so a late writer cannot undo a newer state (it adopts the newer one
  instead). Manual control (force_open, disable, reset) is unconditional: the operator wins.
* Every fleet transition is PUBLISHed; the *listener thread* marks that breaker for an
  immediate re-read of its hash (the message itself is not trusted: anyone can PUBLISH).
* HALF_OPEN is fleet-wide: a probe needs a slot from a capped counter in Redis, and probe
  outcomes are judged in Redis over the whole fleet's probes. Those are the only Redis
  requests made for a caller; they run in the store's *probe lane* thread while the caller
  waits at most ``timeout`` in total per probe, and the process that reported the deciding
  outcome applies the verdict before its caller returns.
* Redis data is input, not truth: everything read is validated (`_records`);
  a bad value is ignored or overwritten and affects only its own breaker.
* Redis trouble never reaches callers: every Redis error is caught in the store's threads;
  the store then marks itself degraded (logged once), the breakers run on local state alone,
  and the store retries with backoff and rejoins (logged once).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
import weakref
from typing import TYPE_CHECKING, Any, Final

from .. import _validate
from .._errors import ConfigError
from .._observe._events import error_name
from .._public import public
from .._retry._budget import DEFAULT_MIN_PER_SECOND, DEFAULT_RATIO, DEFAULT_TTL, RetryBudget
from ._bindings import RedisBinding
from ._budget import BudgetBinding, SharedRetryBudget
from ._lua import Scripts
from ._outbox import Op, Outbox, Transition
from ._probes import ProbeLane, ProbeRequests
from ._records import BadRecord, ProblemLog, message_name, script_reply
from ._redis_client import key_error, redis_errors, sync_client_from
from ._sync import SyncThread

if TYPE_CHECKING:
    from ._protocol import BreakerPort

__all__ = ["BudgetBinding", "RedisBinding", "RedisStore", "SharedRetryBudget"]

DEFAULT_PREFIX: Final = "resilience:"
DEFAULT_SYNC_INTERVAL: Final = 0.1
DEFAULT_TIMEOUT: Final = 0.05
# Errors in a row before the store gives up on Redis and breakers run on local state.
DOWN_AFTER: Final = 2
# Retry an unreachable Redis after sync_interval, doubling up to this.
MAX_RETRY_DELAY: Final = 1.0
# An outage (or a return) is logged as a warning at most this often, in seconds.
LOG_EVERY: Final = 60.0
# A process's published window is ignored once unchanged for this many sync intervals (and
# at least _MIN_STALE seconds) while its heartbeat is unchanged too: a dead process stops
# counting quickly. Live processes rewrite their heartbeat three times as often.
_STALE_TICKS: Final = 30
_MIN_STALE: Final = 3.0
# Keys expire when nobody uses them: every write sets a TTL of max(this, 10 x stale,
# 2 x open_duration), and the processes that hold the breaker renew it every quarter TTL.
_MIN_KEY_TTL: Final = 60.0
# The listener thread waits for a message at most this long, then looks at its stop flag.
LISTEN_POLL: Final = 0.2

_log = logging.getLogger("resilience")


_stores: weakref.WeakSet[RedisStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_stores):
        store._after_fork()


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


class RedisStore(ProbeRequests, SyncThread):
    """Share circuit breakers' state across processes through Redis.

    Pass it as ``store=`` to every `CircuitBreaker` that should be shared; breakers with the
    same name on the same Redis (and ``prefix``) act as one breaker across the fleet: the
    fleet's calls fill one window, a trip, reset or force in any process reaches every
    process within milliseconds (pub/sub), and HALF_OPEN lets ``half_open_calls`` probes
    through in the whole fleet.

    Calls never wait for Redis: each process counts locally and a background thread syncs
    every ``sync_interval`` seconds, one pipeline for all of the store's active breakers
    (idle ones cost almost nothing). If Redis is slow or down, breakers carry on with local
    state (logged once) and rejoin when it is back. Values read from Redis are validated: a
    malformed one is ignored (logged once per key) and affects only its own breaker.

    Args:
        client: a `redis.Redis` or `redis.asyncio.Redis`. The store only reads its connection
            settings (host, port, db, credentials, TLS) and opens its own sync connections
            with its own timeouts, used from its own threads: an asyncio client is fine.
        prefix: prefix of every key and of the pub/sub channel. Applications sharing one
            Redis should each use their own (``prefix="billing:"``): breakers with the same
            name and prefix are one breaker.
        sync_interval: seconds between two syncs (publishing counts, reading the fleet's).
        timeout: socket timeout of every Redis command, in seconds; also the longest a
            HALF_OPEN probe waits for Redis in total (its slot, then its verdict).

    Example:
        >>> import redis
        >>> from resilience import CircuitBreaker
        >>> from resilience.stores import RedisStore
        >>> store = RedisStore(redis.Redis(host="127.0.0.1"), prefix="shop:")  # doctest: +SKIP
        >>> breaker = CircuitBreaker("payments", store=store)  # doctest: +SKIP
        >>> store.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        client: object,
        *,
        prefix: object = DEFAULT_PREFIX,
        sync_interval: _validate.Duration = DEFAULT_SYNC_INTERVAL,
        timeout: _validate.Duration = DEFAULT_TIMEOUT,
    ) -> None:
        if not isinstance(prefix, str) or not prefix:
            msg = f"prefix must be a non-empty string, got {prefix!r}"
            raise ConfigError(msg)
        self.prefix: str = prefix
        self.sync_interval = _validate.required_duration(
            "sync_interval",
            sync_interval,
            minimum=_validate.MIN_INTERVAL,
            maximum=_validate.MAX_SYNC_INTERVAL,
        )
        self.timeout = _validate.required_duration(
            "timeout", timeout, minimum=_validate.MIN_INTERVAL, maximum=_validate.MAX_SOCKET_TIMEOUT
        )
        self.channel = f"{prefix}events"
        self.heartbeat_key = f"{prefix}heartbeats"
        self._client = sync_client_from(client, self.timeout)
        self._errors = redis_errors()
        self._scripts = Scripts(self._client, self.channel)
        self._logged_at: dict[str, float] = {}
        self._problems = ProblemLog(_log)
        self._bindings: dict[str, RedisBinding] = {}
        self._budgets: list[BudgetBinding] = []
        self._closed = False
        self._init_runtime()
        _stores.add(self)

    def _init_runtime(self) -> None:
        self.process_id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.stale = max(_MIN_STALE, self.sync_interval * _STALE_TICKS)
        self.key_ttl = max(_MIN_KEY_TTL, 10 * self.stale)
        self._lock = threading.Lock()  # guards _bindings
        self._wake = threading.Event()
        self._outbox = Outbox(self._wake)
        self._stop = threading.Event()
        self._healthy = True
        self._failures = 0
        self._outages = 0
        self._retry_at = 0.0
        self._synced = threading.Condition()
        self._subscribed = threading.Event()
        self._ticks = 0
        # Regular ticks read every breaker while _ticks < this (sync() asks for it).
        self._full_until = 0
        # Some binding is dirty: a light tick reads it at once.
        self._dirty = False
        # The bindings every regular tick looks at: recently active, or HALF_OPEN.
        self._watch: set[RedisBinding] = set()
        start = time.monotonic()
        self._next_idle_check = start
        self._next_heartbeat = start
        self._next_sweep = start + self.key_ttl / 4
        self._heartbeat_version = 0
        # Peers' heartbeats: process id -> (value, when first seen with it); the live ones.
        self._heartbeats: dict[bytes, tuple[bytes, float]] = {}
        self._live_peers: frozenset[bytes] = frozenset()
        self._lane = ProbeLane(f"resilience-redis-probe[{self.prefix}]")
        self._sync_thread = threading.Thread(
            target=self._sync_loop, name=f"resilience-redis-sync[{self.prefix}]", daemon=True
        )
        self._listen_thread = threading.Thread(
            target=self._listen_loop, name=f"resilience-redis-listen[{self.prefix}]", daemon=True
        )
        self._started = False

    def _start(self) -> None:
        if not self._started and not self._closed:
            self._started = True
            self._sync_thread.start()
            self._listen_thread.start()

    def _after_fork(self) -> None:
        # Threads do not survive fork() and locks may be held by threads that no longer
        # exist: a forked worker (gunicorn --preload) starts afresh as a new process.
        if self._closed:
            return
        self._client.connection_pool.reset()
        bindings = self._bindings
        self._init_runtime()
        self._bindings = bindings
        for binding in [*bindings.values(), *self._budgets]:
            binding.renew()
        for binding in bindings.values():
            binding.outbox = self._outbox  # the old one's ops were the parent's
            binding.dirty = True
        self._dirty = True
        if bindings or self._budgets:
            self._start()

    # ---------------------------------------------------------------- public

    @property
    def healthy(self) -> bool:
        """False while Redis is unreachable and breakers run on local state."""
        return self._healthy and not self._closed

    def bind(self, port: BreakerPort) -> RedisBinding | None:
        """Link a breaker to the fleet's state (`CircuitBreaker` calls this for you)."""
        if self._closed:
            msg = "RedisStore is closed; create a new one"
            raise ConfigError(msg)
        binding = RedisBinding(self, self._outbox, port)
        with self._lock:
            self._bindings[port.name] = binding
        self._start()
        self._dirty = True
        self._wake.set()  # adopt the fleet's state now, not one interval later
        return binding

    def retry_budget(
        self,
        name: str,
        *,
        ratio: float = DEFAULT_RATIO,
        min_per_second: float = DEFAULT_MIN_PER_SECOND,
        ttl: _validate.Duration = DEFAULT_TTL,
        clock: _validate.Clock = time.monotonic,
    ) -> RetryBudget:
        """A `RetryBudget` counted over every process that uses *name* on this Redis.

        Each process counts its calls and retries locally (no Redis call per call or retry)
        and the sync thread shares the totals, so ``ratio`` and the reserve
        (``min_per_second * ttl``) bound the retries of the whole fleet, give or take one
        ``sync_interval``. While Redis is unreachable it counts this process only.

        Example:
            >>> budget = store.retry_budget("payments", ratio=0.1)  # doctest: +SKIP
            >>> Retry(on=ConnectionError, budget=budget)  # doctest: +SKIP
        """
        if self._closed:
            msg = "RedisStore is closed; create a new one"
            raise ConfigError(msg)
        budget = SharedRetryBudget(
            _validate.required_name("name", name),
            ratio=ratio,
            min_per_second=min_per_second,
            ttl=ttl,
            clock=clock,
        )
        with self._lock:
            self._budgets.append(BudgetBinding(self, budget))
        self._start()
        self._wake.set()
        return budget

    def sync(self, timeout: float = 5.0) -> bool:
        """Wait until the store listens for changes and has synced every breaker since this call.

        For tests and tools; calls never need it. Returns False if that did not happen
        within *timeout* seconds (Redis unreachable).
        """
        if not self._started:
            return True
        deadline = time.monotonic() + timeout
        if not self._subscribed.wait(timeout):
            return False
        with self._synced:
            target = self._ticks + 2  # a tick already running may predate this call
            # Those ticks read every breaker, idle or not.
            self._full_until = max(self._full_until, target)
            while self._ticks < target and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.set()
                self._synced.wait(min(left, self.sync_interval))
        return not self._closed

    def close(self) -> None:
        """Stop the threads and close the connections; bound breakers go on locally."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        with self._synced:
            self._synced.notify_all()
        self._lane.stop()
        for thread in (self._sync_thread, self._listen_thread):
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout=5.0)
        # The pool is the store's own: Redis.close() leaves a pool passed in untouched.
        self._client.connection_pool.disconnect()
        self._client.close()
        _stores.discard(self)

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "healthy" if self._healthy else "degraded"
        return f"<RedisStore prefix={self.prefix!r} {state} breakers={len(self._bindings)}>"

    # ---------------------------------------------------------------- Redis plumbing

    def _live_budgets(self) -> list[BudgetBinding]:
        with self._lock:
            self._budgets = [b for b in self._budgets if b.budget is not None]
            return list(self._budgets)

    def _live_bindings(self) -> list[RedisBinding]:
        with self._lock:
            dead = [name for name, b in self._bindings.items() if b.port is None]
            for name in dead:
                del self._bindings[name]
            return list(self._bindings.values())

    def _mark_all_dirty(self) -> None:
        with self._lock:
            for binding in self._bindings.values():
                binding.dirty = True
        self._dirty = True
        self._wake.set()

    def _report(self, name: str, what: str) -> None:
        self._problems.report(self.prefix, name, what)

    # ---------------------------------------------------------------- the write queue

    def _drain(self) -> None:
        """Run every queued write (a Redis error propagates, the op back in the queue)."""
        outbox = self._outbox
        while (op := outbox.take()) is not None:
            try:
                self._run_queued(op)
            except BaseException:
                outbox.requeue([op])
                raise

    def _run_queued(self, op: Op) -> None:
        """Run *op* and mark it done; a Redis error is raised with *op* not done."""
        try:
            self._run_op(op)
        except self._errors as exc:
            if not key_error(exc):
                raise
            self._report(op.binding.name, "wrong type")
        except BadRecord as bad:
            self._report(op.binding.name, bad.what)
        except Exception as exc:  # a bug must not stop the queue: drop this op
            self._log_bug(exc)
        self._outbox.finish(op)

    def _run_op(self, op: Op) -> None:
        binding = op.binding
        port = binding.port
        if port is None:
            return
        config = port.config
        if isinstance(op, Transition):
            open_ms = int(config.open_duration * 1000) if op.new == "open" else 0
            reply = self._scripts.transition(binding, op.new, op.expected, open_ms)
        else:
            reply = self._scripts.probe_done(binding, op.epoch, op.outcome, config)
        state, epoch, remaining = script_reply(*reply[:3])
        if epoch < 0:
            binding.local_verdict()  # the fleet state is unusable: no fleet verdict
        else:
            binding.apply(state, epoch, remaining, "fleet state")

    # ---------------------------------------------------------------- health

    def _mark_down(self, exc: BaseException) -> None:
        # The store's own breaker: one slow reply is retried at once; DOWN_AFTER errors in
        # a row switch every breaker to local state until a sync succeeds again.
        with self._outbox.apply_lock:
            self._failures += 1
            if self._failures > DOWN_AFTER:
                delay = self.sync_interval * 2 ** min(self._failures - DOWN_AFTER, 16)
                self._retry_at = time.monotonic() + min(MAX_RETRY_DELAY, delay)
            going_down = self._healthy and self._failures >= DOWN_AFTER
            if going_down:
                self._healthy = False
                self._outages += 1
                # Once per outage (and at most once a minute if Redis flaps), never per
                # call; the error's type only (messages can carry secrets).
                self._log(
                    "Redis store %r unreachable (%s): breakers use local state until it is back",
                    error_name(exc),
                )
                # Under the lock: no fleet state can be applied in between.
                for binding in self._live_bindings():
                    binding.forget_snapshot()
                    binding.go_local()
                for budget in self._live_budgets():
                    budget.forget_snapshot()
                    budget.go_local()
        self._wake.set()

    def _mark_up(self) -> None:
        if self._healthy:
            self._failures = 0
            return
        with self._outbox.apply_lock:
            self._log("Redis store %r reachable again: breakers rejoin the fleet")
            self._healthy = True
            self._failures = 0
        self._mark_all_dirty()  # adopt whatever the fleet did meanwhile

    def _log(self, message: str, *args: object) -> None:
        now = time.monotonic()
        quiet = now - self._logged_at.get(message, -LOG_EVERY) < LOG_EVERY
        if not quiet:
            self._logged_at[message] = now
        _log.log(logging.DEBUG if quiet else logging.WARNING, message, self.prefix, *args)

    def _log_bug(self, exc: BaseException) -> None:
        # The type at ERROR (at most once a minute): the message and traceback may quote
        # Redis data, so they go to DEBUG only.
        message = "Redis store %r: unexpected %s in the store's threads (a bug; please report)"
        now = time.monotonic()
        if now - self._logged_at.get(message, -LOG_EVERY) >= LOG_EVERY:
            self._logged_at[message] = now
            _log.error(message, self.prefix, error_name(exc))
        _log.debug("Redis store %r: details", self.prefix, exc_info=exc)

    # ---------------------------------------------------------------- the listener thread

    def _listen_loop(self) -> None:
        pubsub: Any = None
        failures = 0
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self._client.pubsub()
                    pubsub.subscribe(self.channel)
                message = pubsub.get_message(timeout=LISTEN_POLL)
                failures = 0
            except self._errors:
                self._subscribed.clear()
                # The sync thread reports the outage; this thread only reconnects.
                pubsub = self._close_pubsub(pubsub)
                failures += 1
                self._stop.wait(min(MAX_RETRY_DELAY, self.sync_interval * 2**failures))
                continue
            if message is None:
                continue
            if message.get("type") == "message":
                self._on_message(message.get("data"))
            elif message.get("type") == "subscribe":
                # Confirmed by Redis: no transition can be missed from now on; the ones
                # published while unsubscribed are caught by reading every breaker once.
                self._mark_all_dirty()
                self._subscribed.set()
        self._close_pubsub(pubsub)

    @staticmethod
    def _close_pubsub(pubsub: Any) -> None:
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # noqa: S110  # the connection is already gone
                pass

    def _on_message(self, data: object) -> None:
        # The message only says which breaker changed: its hash is re-read (by the sync
        # thread, at once) rather than trusting what anyone can PUBLISH.
        name = message_name(data)
        if name is None:
            return
        with self._lock:
            binding = self._bindings.get(name)
        if binding is not None and not self._closed:
            binding.dirty = True
            self._dirty = True
            self._wake.set()


public("resilience.stores", RedisStore)
