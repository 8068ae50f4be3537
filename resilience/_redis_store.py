"""Breaker state shared through Redis, without a Redis round trip per call.

Design (see docs/shared-state.md):

* Calls never talk to Redis on the happy path. Each process keeps counting in its own window;
  one daemon *sync thread* per store wakes every ``sync_interval`` and, in one pipeline for
  all bound breakers, publishes this process's window (HSET, only when it changed) and reads
  each breaker's hash (HGETALL: the fleet state and the other processes' windows). The
  breaker adds the others' counts when it decides, so the window that trips is the fleet's.
  In steady state that is one command per breaker per interval, and one round trip.
* The fleet state is in the same hash: ``state, epoch, until``. Every write goes through a
  Lua script
  that bumps the epoch; automatic transitions are compare-and-set on the epoch the process
  last saw, so a late writer cannot undo a newer state (it adopts the newer one instead).
  Manual control (force_open, disable, reset) is unconditional: the operator wins.
* Every fleet transition is PUBLISHed; a *listener thread* applies it at once, and the sync
  tick catches anything pub/sub missed.
* HALF_OPEN is fleet-wide: a probe needs a slot from a capped counter in Redis (the only
  Redis call a caller ever makes, and only in HALF_OPEN), and probe outcomes are judged in
  Redis over the whole fleet's probes.
* Redis trouble never reaches callers: every Redis error is caught in the store's threads or
  in probe-slot acquisition; the store then marks itself degraded (logged once), the breakers
  run on local state alone, and the store retries with backoff and rejoins (logged once).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from . import _config
from ._budget import DEFAULT_MIN_PER_SECOND, DEFAULT_RATIO, DEFAULT_TTL, RetryBudget
from ._errors import ConfigError
from ._events import error_name

if TYPE_CHECKING:
    from ._breaker import CircuitBreaker

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
# at least _MIN_STALE seconds): a dead process stops counting quickly. Live processes
# rewrite theirs (with a new version) three times as often.
_STALE_TICKS: Final = 30
_MIN_STALE: Final = 3.0
# A probe slot taken by a process that died is given back when the probe hash expires.
_MIN_PROBE_TTL_MS: Final = 10_000
_QUEUE_LIMIT: Final = 10_000
# The states written to Redis (HALF_OPEN is derived: OPEN whose time is up).
_FLEET_STATES: Final = frozenset({"closed", "open", "forced_open", "disabled"})
_LISTEN_POLL: Final = 0.2

_log = logging.getLogger("resilience")

# One hash per breaker holds the fleet state (fields state, epoch, until: Redis time in ms)
# and every process's window (field "w:<process id>", value
# "epoch:calls:failures:slow:run:version"). The scripts below get it as KEYS[1] and the
# HALF_OPEN probe tally hash as KEYS[2]; the sync tick reads it with a plain HGETALL.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local st = redis.call('HMGET', KEYS[1], 'state', 'epoch', 'until')
local state = st[1] or 'closed'
local epoch = tonumber(st[2] or '0')
local remaining = 0
if st[3] then remaining = tonumber(st[3]) - now end
"""

_SET_STATE = """
local function set_state(new, open_ms)
  local new_epoch = math.max(epoch + 1, now)
  redis.call('HSET', KEYS[1], 'state', new, 'epoch', new_epoch, 'until', now + open_ms)
  redis.call('DEL', KEYS[2])
  redis.call('PUBLISH', ARGV[1], new .. ' ' .. new_epoch .. ' ' .. open_ms .. ' ' .. ARGV[2])
  return {new, new_epoch, open_ms, 1}
end
"""

# KEYS: state, probes. ARGV: channel, name, new state, expected epoch ('' = unconditional),
# open ms.
TRANSITION_SCRIPT: Final = (
    _NOW
    + _SET_STATE
    + """
if ARGV[4] ~= '' and tonumber(ARGV[4]) ~= epoch then
  return {state, epoch, remaining, 0}
end
return set_state(ARGV[3], tonumber(ARGV[5]))
"""
)

# KEYS: state, probes. ARGV: channel, name, epoch, cap, probe ttl ms.
# Returns {granted, state, epoch, remaining}.
TAKE_PROBE_SCRIPT: Final = (
    _NOW
    + """
if state ~= 'open' or epoch ~= tonumber(ARGV[3]) then
  return {0, state, epoch, remaining}
end
local taken = redis.call('HINCRBY', KEYS[2], 'taken', 1)
if taken > tonumber(ARGV[4]) then
  redis.call('HINCRBY', KEYS[2], 'taken', -1)
  return {0, state, epoch, remaining}
end
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {1, state, epoch, remaining}
"""
)

# KEYS: state, probes. ARGV: channel, name, epoch, outcome (-1 = released, else the
# FAILURE|SLOW bits), planned probes, failure rate, consecutive mode (0/1), slow-call rate,
# open ms, probe ttl ms. Judges the fleet's probes like CircuitBreaker._check_half_open.
PROBE_DONE_SCRIPT: Final = (
    _NOW
    + _SET_STATE
    + """
if state ~= 'open' or epoch ~= tonumber(ARGV[3]) then
  return {state, epoch, remaining, 0}
end
local outcome = tonumber(ARGV[4])
if outcome < 0 then
  if tonumber(redis.call('HGET', KEYS[2], 'taken') or '0') > 0 then
    redis.call('HINCRBY', KEYS[2], 'taken', -1)
  end
  return {state, epoch, remaining, 0}
end
local done = redis.call('HINCRBY', KEYS[2], 'done', 1)
local failed = redis.call('HINCRBY', KEYS[2], 'failures', outcome % 2)
local slowed = redis.call('HINCRBY', KEYS[2], 'slow', outcome >= 2 and 1 or 0)
redis.call('PEXPIRE', KEYS[2], ARGV[10])
local planned = tonumber(ARGV[5])
if done < planned then
  return {state, epoch, remaining, 0}
end
local reopen
if ARGV[7] == '1' then
  reopen = failed > 0
else
  reopen = failed / planned >= tonumber(ARGV[6])
end
if reopen or slowed / planned >= tonumber(ARGV[8]) then
  return set_state('open', tonumber(ARGV[9]))
end
return set_state('closed', 0)
"""
)

_SCRIPTS: Final = {
    "transition": TRANSITION_SCRIPT,
    "take_probe": TAKE_PROBE_SCRIPT,
    "probe_done": PROBE_DONE_SCRIPT,
}

# Connection settings copied from the user's client onto the store's own sync client; the
# rest (timeouts, retries, event-loop specific hooks) are the store's own.
_COPIED_KWARGS: Final = frozenset(
    {
        "host",
        "port",
        "path",
        "db",
        "username",
        "password",
        "credential_provider",
        "client_name",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_data",
        "ssl_ca_path",
        "ssl_check_hostname",
        "ssl_password",
        "ssl_min_version",
        "ssl_ciphers",
    }
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def sync_client_from(client: object, timeout: float) -> Any:
    """A sync `redis.Redis` reaching the same server as *client*, with the store's timeouts.

    *client* may be a `redis.Redis` or a `redis.asyncio.Redis`: the store runs in its own
    threads, so it always talks through a sync client of its own, with millisecond timeouts
    and no retries (a failed sync is simply tried again on the next tick).
    """
    try:
        import redis
        import redis.backoff
        import redis.connection
        import redis.retry
    except ImportError as exc:  # pragma: no cover - the extra is missing
        msg = "RedisStore needs redis-py: pip install 'resilience[redis]'"
        raise ImportError(msg) from exc
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    connection_class = getattr(pool, "connection_class", None)
    if not isinstance(kwargs, dict) or connection_class is None:
        msg = f"client must be a redis.Redis or redis.asyncio.Redis client, got {client!r}"
        raise ConfigError(msg)
    # The asyncio classes have sync twins of the same name in redis.connection.
    sync_class = getattr(redis.connection, connection_class.__name__, None)
    if sync_class is None:
        msg = f"client uses an unsupported connection class {connection_class.__name__!r}"
        raise ConfigError(msg)
    copied = {key: value for key, value in kwargs.items() if key in _COPIED_KWARGS}
    pool_kwargs: dict[str, Any] = {
        **copied,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        "decode_responses": False,
    }
    new_pool = redis.ConnectionPool(connection_class=sync_class, **pool_kwargs)
    return redis.Redis(connection_pool=new_pool)


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions

    # OSError covers sockets closed under us; RedisError covers timeouts, resets, NOSCRIPT.
    return (redis.exceptions.RedisError, OSError)


class _Published:
    """A hash where each process publishes its own counts under "w:<process id>".

    A live process rewrites its field when its counts change and at least every
    ``stale / 3`` seconds (with a new version), so a field unchanged for ``stale`` seconds
    belongs to a process that is gone: it is ignored, then deleted.
    """

    __slots__ = ("_last_pub", "_last_snapshot", "_seen", "_version", "field", "key", "store")

    def __init__(self, store: RedisStore, key: str) -> None:
        self.store = store
        self.key = key
        self.field = f"w:{store.process_id}"
        self._last_snapshot = ""
        self._last_pub = 0.0
        self._version = 0
        # Other processes' fields: name -> (value, when it was first seen with that value).
        self._seen: dict[bytes, tuple[bytes, float]] = {}

    def _publish(self, text: str, now: float, refresh: float) -> str:
        if text == self._last_snapshot and now - self._last_pub < refresh:
            return ""
        self._last_snapshot = text
        self._last_pub = now
        self._version += 1
        return f"{text}:{self._version}"

    def _others(
        self, fields: dict[bytes, bytes], now: float, stale: float
    ) -> tuple[list[list[bytes]], list[bytes]]:
        """The other live processes' values (split on ':'), and the fields of dead ones."""
        own = self.field.encode()
        seen = self._seen
        fresh: dict[bytes, tuple[bytes, float]] = {}
        values: list[list[bytes]] = []
        dead: list[bytes] = []
        for key, value in fields.items():
            if not key.startswith(b"w:") or key == own:
                continue
            previous = seen.get(key)
            since = previous[1] if previous is not None and previous[0] == value else now
            fresh[key] = (value, since)
            if now - since > stale:
                dead.append(key)
            else:
                values.append(value.split(b":"))
        self._seen = fresh
        return values, dead

    def snapshot(self, now: float, refresh: float) -> str:
        """This process's counts to publish, or '' if unchanged and not due for a refresh."""
        raise NotImplementedError

    def forget_snapshot(self) -> None:
        """Publish again on the next tick (after an error, the write may be lost)."""
        self._last_snapshot = ""

    def renew(self) -> None:
        """Publish under this process's new id (after fork)."""
        self.field = f"w:{self.store.process_id}"
        self._last_snapshot = ""


class RedisBinding(_Published):
    """One breaker's link to a `RedisStore` (the breaker calls it; users never do).

    Methods called by the breaker under its lock only append to the store's queue; the one
    that talks to Redis (`take_probe`) is called outside the lock, and only in HALF_OPEN.
    """

    __slots__ = ("_breaker_ref", "epoch", "fleet_state", "name", "probes_key")

    def __init__(self, store: RedisStore, breaker: CircuitBreaker) -> None:
        # Hash tags keep one breaker's keys in one cluster slot.
        base = f"{store.prefix}{{{breaker.name}}}"
        super().__init__(store, base)
        self.name = breaker.name
        self._breaker_ref: Callable[[], CircuitBreaker | None] = weakref.ref(breaker)
        self.probes_key = f"{base}:probes"
        # The fleet epoch and state this process last applied; 0 = nothing seen yet.
        self.epoch = 0
        self.fleet_state = "unknown"

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The bound breaker, or None once it was garbage-collected."""
        return self._breaker_ref()

    @property
    def shared(self) -> bool:
        """True while the store is connected: the fleet decides; else the breaker is local."""
        return self.store.healthy

    # ---------------------------------------------------------------- called by the breaker

    def transition(self, new: str, manual: bool) -> None:
        """A local transition to *new* (lock held): share it through the sync thread."""
        if new == "half_open":
            return  # derived from the fleet's OPEN state and its `until`, never written
        store = self.store
        if store._closed:
            return  # the breaker is on its own now
        if store.healthy:
            # The operator wins over whatever the fleet did meanwhile; automatic moves are
            # compare-and-set on the epoch they were decided in.
            expected = "" if manual else str(self.epoch)
        else:
            # Cut off from Redis, only this process's latest move is kept, and it is
            # published on rejoin only if the fleet did not move on meanwhile.
            expected = str(self.epoch)
            queue = store._queue
            for op in queue.copy():  # an atomic copy: the sync thread pops concurrently
                if op[0] == "transition" and op[1] is self:
                    try:
                        queue.remove(op)
                    except ValueError:
                        pass  # already replayed
        store._enqueue(("transition", self, new, expected))

    def take_probe(self) -> bool:
        """Take one of the fleet's HALF_OPEN probe slots (outside the breaker's lock).

        False when the fleet has no slot left (or moved on: the new state is applied here).
        True without asking Redis while the store is degraded (local probes only).
        """
        return self.store._take_probe(self)

    def probe_done(self, outcome: int) -> bool:
        """A probe finished with *outcome* (lock held). True: the fleet will judge it."""
        if not self.store.healthy:
            return False
        self.store._enqueue(("probe_done", self, self.epoch, outcome))
        return True

    def probe_released(self) -> None:
        """A probe ended with no outcome (cancelled or ignored): give its slot back."""
        if self.store.healthy:
            self.store._enqueue(("probe_done", self, self.epoch, -1))

    # ---------------------------------------------------------------- called by the store

    def snapshot(self, now: float, refresh: float) -> str:
        """This process's window: "epoch:calls:failures:slow:run:version" (or '')."""
        breaker = self.breaker
        if breaker is None:
            return ""
        calls, failures, slow, run = breaker._store_snapshot()
        return self._publish(f"{self.epoch}:{calls}:{failures}:{slow}:{run}", now, refresh)

    def read(
        self, fields: dict[bytes, bytes], now: float, stale: float
    ) -> tuple[str, int, int | None, tuple[int, int, int, int], list[bytes]]:
        """Parse the breaker's hash: (state, epoch, until, others' totals, stale fields)."""
        state = _text(fields.get(b"state", b"closed"))
        epoch = int(fields.get(b"epoch", 0))
        until_raw = fields.get(b"until")
        until = int(until_raw) if until_raw is not None else None
        calls = failures = slow = run = 0
        values, dead = self._others(fields, now, stale)
        for parts in values:
            if len(parts) != 6 or int(parts[0]) != epoch:
                continue  # counted under an older state: not part of this window
            calls += int(parts[1])
            failures += int(parts[2])
            slow += int(parts[3])
            run += int(parts[4])
        return state, epoch, until, (calls, failures, slow, run), dead

    def apply(self, state: str, epoch: int, remaining_ms: float, why: str) -> None:
        """Adopt the fleet's *state* if *epoch* is newer than the one applied (any thread)."""
        breaker = self.breaker
        if breaker is None or state not in _FLEET_STATES:
            return
        with self.store._apply_lock:
            if epoch <= self.epoch:
                if epoch == 0 and self.epoch:
                    # The breaker's hash was deleted: the fleet forgot it, start afresh.
                    self.epoch = 0
                    self.fleet_state = "closed"
                    breaker._store_apply("closed", 0.0, "fleet state deleted")
                return
            self.epoch = epoch
            self.fleet_state = state
            breaker._store_apply(state, remaining_ms / 1000.0, why)

    def apply_counts(self, counts: tuple[int, int, int, int]) -> None:
        """Give the breaker the other processes' window totals; it may trip on them."""
        breaker = self.breaker
        if breaker is not None:
            breaker._store_counts(counts)

    def go_local(self) -> None:
        """The store lost Redis: forget the others' counts; judge pending probes locally."""
        breaker = self.breaker
        if breaker is not None:
            breaker._store_counts((0, 0, 0, 0))
            breaker._store_local_verdict()


class SharedRetryBudget(RetryBudget):
    """A `RetryBudget` that adds the other processes' calls and retries (see
    `RedisStore.retry_budget`); counting stays local and lock-cheap."""

    __slots__ = ("__weakref__", "_remote", "name")

    def __init__(
        self,
        name: str,
        *,
        ratio: float,
        min_per_second: float,
        ttl: _config.Duration,
        clock: _config.Clock,
    ) -> None:
        super().__init__(ratio, min_per_second, ttl, clock=clock)
        self.name = name
        self._remote = (0, 0)

    def _totals(self, epoch: int) -> tuple[int, int]:
        calls, retries = super()._totals(epoch)
        remote = self._remote
        return calls + remote[0], retries + remote[1]

    def local_totals(self) -> tuple[int, int]:
        """This process's own calls and retries inside the ttl."""
        now = self._clock()
        with self._lock:
            epoch, _ = self._slot(now)
            return RetryBudget._totals(self, epoch)

    def __repr__(self) -> str:
        return f"<SharedRetryBudget {self.name!r} available={self.available()}>"


class BudgetBinding(_Published):
    """A shared retry budget's link to its store: publishes and reads "calls:retries"."""

    __slots__ = ("_budget_ref",)

    def __init__(self, store: RedisStore, budget: SharedRetryBudget) -> None:
        super().__init__(store, f"{store.prefix}{{budget:{budget.name}}}")
        self._budget_ref: Callable[[], SharedRetryBudget | None] = weakref.ref(budget)

    @property
    def budget(self) -> SharedRetryBudget | None:
        """The budget, or None once it was garbage-collected."""
        return self._budget_ref()

    def snapshot(self, now: float, refresh: float) -> str:
        """This process's "calls:retries:version" (or '')."""
        budget = self.budget
        if budget is None:
            return ""
        calls, retries = budget.local_totals()
        return self._publish(f"{calls}:{retries}", now, refresh)

    def read(self, fields: dict[bytes, bytes], now: float, stale: float) -> list[bytes]:
        """Give the budget the other processes' totals; return the fields of dead ones."""
        values, dead = self._others(fields, now, stale)
        calls = retries = 0
        for parts in values:
            if len(parts) == 3:
                calls += int(parts[0])
                retries += int(parts[1])
        budget = self.budget
        if budget is not None:
            budget._remote = (calls, retries)
        return dead

    def go_local(self) -> None:
        """Redis lost: count this process only."""
        budget = self.budget
        if budget is not None:
            budget._remote = (0, 0)


_stores: weakref.WeakSet[RedisStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_stores):
        store._after_fork()


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


class RedisStore:
    """Share circuit breakers' state across processes through Redis.

    Pass it as ``store=`` to every `CircuitBreaker` that should be shared; breakers with the
    same name on the same Redis (and ``prefix``) act as one breaker across the fleet: the
    fleet's calls fill one window, a trip, reset or force in any process reaches every
    process within milliseconds (pub/sub), and HALF_OPEN lets ``half_open_calls`` probes
    through in the whole fleet.

    Calls never wait for Redis: each process counts locally and a background thread syncs
    every ``sync_interval`` seconds, one pipeline for all of the store's breakers. If Redis
    is slow or down, breakers carry on with local state (logged once) and rejoin when it is
    back.

    Args:
        client: a `redis.Redis` or `redis.asyncio.Redis`. The store only reads its connection
            settings (host, port, db, credentials, TLS) and opens its own sync connections
            with its own timeouts, used from its own threads: an asyncio client is fine.
        prefix: prefix of every key and of the pub/sub channel.
        sync_interval: seconds between two syncs (publishing counts, reading the fleet's).
        timeout: socket timeout of every Redis command, in seconds (milliseconds matter:
            a probe-slot request in HALF_OPEN waits at most this long).

    Example:
        >>> import redis
        >>> from resilience import CircuitBreaker
        >>> from resilience.stores import RedisStore
        >>> store = RedisStore(redis.Redis(host="127.0.0.1"))  # doctest: +SKIP
        >>> breaker = CircuitBreaker("payments", store=store)  # doctest: +SKIP
        >>> store.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        client: object,
        *,
        prefix: object = DEFAULT_PREFIX,
        sync_interval: _config.Duration = DEFAULT_SYNC_INTERVAL,
        timeout: _config.Duration = DEFAULT_TIMEOUT,
    ) -> None:
        if not isinstance(prefix, str) or not prefix:
            msg = f"prefix must be a non-empty string, got {prefix!r}"
            raise ConfigError(msg)
        self.prefix: str = prefix
        self.sync_interval = _config.required_duration(
            "sync_interval",
            sync_interval,
            minimum=_config.MIN_INTERVAL,
            maximum=_config.MAX_SYNC_INTERVAL,
        )
        self.timeout = _config.required_duration(
            "timeout", timeout, minimum=_config.MIN_INTERVAL, maximum=_config.MAX_SOCKET_TIMEOUT
        )
        self.channel = f"{prefix}events"
        self._client = sync_client_from(client, self.timeout)
        self._errors = _redis_errors()
        self._shas: dict[str, str] = {}
        self._logged_at: dict[str, float] = {}
        self._bindings: dict[str, RedisBinding] = {}
        self._budgets: list[BudgetBinding] = []
        self._closed = False
        self._init_runtime()
        _stores.add(self)

    def _init_runtime(self) -> None:
        self.process_id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.stale = max(_MIN_STALE, self.sync_interval * _STALE_TICKS)
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=_QUEUE_LIMIT)
        self._lock = threading.Lock()  # guards _bindings
        self._apply_lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._healthy = True
        self._failures = 0
        self._outages = 0
        self._retry_at = 0.0
        self._synced = threading.Condition()
        self._subscribed = threading.Event()
        self._ticks = 0
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
        if bindings or self._budgets:
            self._start()

    # ---------------------------------------------------------------- public

    @property
    def healthy(self) -> bool:
        """False while Redis is unreachable and breakers run on local state."""
        return self._healthy and not self._closed

    def bind(self, breaker: CircuitBreaker) -> RedisBinding | None:
        """Link *breaker* to the fleet's state (`CircuitBreaker` calls this for you)."""
        if self._closed:
            msg = "RedisStore is closed; create a new one"
            raise ConfigError(msg)
        binding = RedisBinding(self, breaker)
        with self._lock:
            self._bindings[breaker.name] = binding
        self._start()
        self._wake.set()  # adopt the fleet's state now, not one interval later
        return binding

    def retry_budget(
        self,
        name: str,
        *,
        ratio: float = DEFAULT_RATIO,
        min_per_second: float = DEFAULT_MIN_PER_SECOND,
        ttl: _config.Duration = DEFAULT_TTL,
        clock: _config.Clock = time.monotonic,
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
            _config.required_name("name", name),
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
        """Wait until the store listens for changes and has synced since this call.

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

    def _sha(self, script: str) -> str:
        sha = self._shas.get(script)
        if sha is None:
            sha = _text(self._client.script_load(_SCRIPTS[script]))
            self._shas[script] = sha
        return sha

    def _eval(self, script: str, binding: RedisBinding, *args: object) -> Any:
        import redis.exceptions

        keys = (binding.key, binding.probes_key)
        argv = (self.channel, binding.name, *args)
        try:
            return self._client.evalsha(self._sha(script), 2, *keys, *argv)
        except redis.exceptions.NoScriptError:
            self._shas.clear()  # Redis restarted or SCRIPT FLUSH
            return self._client.evalsha(self._sha(script), 2, *keys, *argv)

    def _live_budgets(self) -> list[BudgetBinding]:
        with self._lock:
            self._budgets = [b for b in self._budgets if b.budget is not None]
            return list(self._budgets)

    def _live_bindings(self) -> list[RedisBinding]:
        with self._lock:
            dead = [name for name, b in self._bindings.items() if b.breaker is None]
            for name in dead:
                del self._bindings[name]
            return list(self._bindings.values())

    def _enqueue(self, op: tuple[Any, ...]) -> None:
        self._queue.append(op)
        self._wake.set()

    def _take_probe(self, binding: RedisBinding) -> bool:
        if not self.healthy:
            return True
        breaker = binding.breaker
        if breaker is None:
            return True
        config = breaker.config
        try:
            granted, state, epoch, remaining = self._eval(
                "take_probe",
                binding,
                binding.epoch,
                config.half_open_calls,
                self._probe_ttl_ms(config.open_duration),
            )
        except self._errors as exc:
            self._mark_down(exc)
            return True
        except Exception:  # a bug here must not reach the caller either
            _log.exception("Redis store %r: probe slot request failed", self.prefix)
            return True
        if granted:
            return True
        binding.apply(_text(state), int(epoch), float(remaining), "fleet state")
        return False

    @staticmethod
    def _probe_ttl_ms(open_duration: float) -> int:
        return max(_MIN_PROBE_TTL_MS, int(open_duration * 2000))

    def _mark_down(self, exc: BaseException) -> None:
        # The store's own breaker: one slow reply is retried at once; DOWN_AFTER errors in
        # a row switch every breaker to local state until a sync succeeds again.
        with self._apply_lock:
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
        with self._apply_lock:
            self._log("Redis store %r reachable again: breakers rejoin the fleet")
            self._healthy = True
            self._failures = 0

    def _log(self, message: str, *args: object) -> None:
        now = time.monotonic()
        quiet = now - self._logged_at.get(message, -LOG_EVERY) < LOG_EVERY
        if not quiet:
            self._logged_at[message] = now
        _log.log(logging.DEBUG if quiet else logging.WARNING, message, self.prefix, *args)

    # ---------------------------------------------------------------- the sync thread

    def _sync_loop(self) -> None:
        next_tick = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if not self._healthy and now < self._retry_at:
                wait = self._retry_at - now
            else:
                wait = max(0.0, next_tick - now) if not self._queue else 0.0
            if wait > 0:
                self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                break
            now = time.monotonic()
            if not self._healthy and now < self._retry_at:
                continue
            try:
                self._drain()
                self._tick(now)
                next_tick = now + self.sync_interval
            except self._errors as exc:
                self._mark_down(exc)
                continue
            except Exception:  # never let a bug kill the thread: log it and carry on
                _log.exception("Redis store %r sync failed", self.prefix)
                self._stop.wait(self.sync_interval)
                continue
            self._mark_up()
            with self._synced:
                self._ticks += 1
                self._synced.notify_all()

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            op = queue[0]
            self._run_op(op)
            # Popped only once done: on a Redis error the op is replayed after reconnecting.
            if queue and queue[0] is op:
                queue.popleft()

    def _run_op(self, op: tuple[Any, ...]) -> None:
        kind, binding = op[0], op[1]
        breaker = binding.breaker
        if breaker is None:
            return
        config = breaker.config
        if kind == "transition":
            _, _, new, expected = op
            open_ms = int(config.open_duration * 1000) if new == "open" else 0
            reply = self._eval("transition", binding, new, expected, open_ms)
        else:
            _, _, epoch, outcome = op
            reply = self._eval(
                "probe_done",
                binding,
                epoch,
                outcome,
                config.half_open_calls,
                repr(config.failure_rate),
                "1" if config.consecutive_failures is not None else "0",
                repr(config.slow_call_rate),
                int(config.open_duration * 1000),
                self._probe_ttl_ms(config.open_duration),
            )
        state, epoch, remaining, _changed = reply
        binding.apply(_text(state), int(epoch), float(remaining), "fleet state")

    def _tick(self, now: float) -> None:
        bindings = self._live_bindings()
        budgets = self._live_budgets()
        published: list[_Published] = [*bindings, *budgets]
        if not published:
            return
        refresh = self.stale / 3
        # Redis's clock is needed only to turn an OPEN state's `until` into seconds left.
        with_time = any(b.fleet_state != "closed" for b in bindings)
        outages = self._outages
        pipe = self._client.pipeline(transaction=False)
        for item in published:
            snapshot = item.snapshot(now, refresh)
            if snapshot:
                pipe.hset(item.key, item.field, snapshot)
            pipe.hgetall(item.key)
        if with_time:
            pipe.time()
        try:
            replies = pipe.execute()
        except BaseException:
            for item in published:
                item.forget_snapshot()
            raise
        redis_now = None
        if with_time:
            seconds, micros = replies.pop()
            redis_now = int(seconds) * 1000 + int(micros) // 1000
        reads = iter([reply for reply in replies if isinstance(reply, dict)])
        cleanup = self._client.pipeline(transaction=False)
        with self._apply_lock:
            if self._outages != outages:
                return  # Redis was declared lost meanwhile: these counts are not to be used
            for binding, fields in zip(bindings, reads, strict=False):
                state, epoch, until, counts, dead = binding.read(fields, now, self.stale)
                binding.fleet_state = state
                if dead:
                    cleanup.hdel(binding.key, *dead)
                if state == "open" and until is not None:
                    if redis_now is None:
                        continue  # learn how long it stays open on the next tick (or pub/sub)
                    remaining = float(until - redis_now)
                else:
                    remaining = 0.0
                binding.apply(state, epoch, remaining, "fleet state")
                if epoch == binding.epoch:
                    binding.apply_counts(counts)
            for budget, fields in zip(budgets, reads, strict=False):
                dead = budget.read(fields, now, self.stale)
                if dead:
                    cleanup.hdel(budget.key, *dead)
        if len(cleanup):
            cleanup.execute()

    # ---------------------------------------------------------------- the listener thread

    def _listen_loop(self) -> None:
        pubsub: Any = None
        failures = 0
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self._client.pubsub()
                    pubsub.subscribe(self.channel)
                message = pubsub.get_message(timeout=_LISTEN_POLL)
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
                try:
                    self._on_message(_text(message["data"]))
                except Exception:  # a foreign or garbled message must not stop the thread
                    _log.exception("Redis store %r: bad message ignored", self.prefix)
            elif message.get("type") == "subscribe":
                self._subscribed.set()  # confirmed by Redis: no transition can be missed now
        self._close_pubsub(pubsub)

    @staticmethod
    def _close_pubsub(pubsub: Any) -> None:
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # noqa: S110  # the connection is already gone
                pass

    def _on_message(self, text: str) -> None:
        try:
            state, epoch, open_ms, name = text.split(" ", 3)
            epoch_number, remaining = int(epoch), float(open_ms)
        except ValueError:
            return  # not ours
        with self._lock:
            binding = self._bindings.get(name)
        if binding is not None and not self._closed:
            binding.apply(state, epoch_number, remaining, "fleet state")
