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
* Redis data is input, not truth: everything read is validated (resilience/_redis_records.py);
  a bad value is ignored or overwritten and affects only its own breaker.
* Redis trouble never reaches callers: every Redis error is caught in the store's threads;
  the store then marks itself degraded (logged once), the breakers run on local state alone,
  and the store retries with backoff and rejoins (logged once).
"""

from __future__ import annotations

import collections
import contextvars
import logging
import math
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from .. import _validate
from .._errors import ConfigError
from .._observe._events import error_name
from .._public import public
from .._retry._budget import DEFAULT_MIN_PER_SECOND, DEFAULT_RATIO, DEFAULT_TTL, RetryBudget
from ._records import (
    EPOCH_SLACK_MS,
    FLEET_STATES,
    MAX_COUNT,
    BadRecord,
    ProblemLog,
    budget_window,
    fleet_state,
    message_name,
    open_seconds,
    peer_window,
    script_reply,
)

if TYPE_CHECKING:
    from .._breaker._breaker import CircuitBreaker

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
# A probe slot taken by a process that died is given back when the probe hash expires.
_MIN_PROBE_TTL_MS: Final = 10_000
# Keys expire when nobody uses them: every write sets a TTL of max(this, 10 x stale,
# 2 x open_duration), and the processes that hold the breaker renew it every quarter TTL.
_MIN_KEY_TTL: Final = 60.0
# An idle breaker (window unchanged, not OPEN) is not read from Redis; its window is looked
# at (locally) this often, to notice when it becomes active.
_IDLE_CHECK: Final = 1.0
_QUEUE_LIMIT: Final = 10_000
_MANUAL_STATES: Final = frozenset({"forced_open", "disabled"})
_LISTEN_POLL: Final = 0.2
_NO_COUNTS: Final = (0, 0, 0, 0)

_log = logging.getLogger("resilience")

# The Redis time a probe may still spend for its caller: take_probe and the wait for the
# verdict share one budget of `timeout` (the binding's id, seconds left). A context variable,
# so that concurrent probes in threads or asyncio tasks each have their own.
_probe_budget: contextvars.ContextVar[tuple[int, float] | None] = contextvars.ContextVar(
    "resilience_probe_budget", default=None
)

# ---------------------------------------------------------------------------- Lua scripts
# One hash per breaker holds the fleet state (fields state, epoch, until: Redis time in ms)
# and every process's window (field "w:<process id>", value
# "epoch:calls:failures:slow:run:version"). The scripts get it as KEYS[1] and the HALF_OPEN
# probe tally hash as KEYS[2]; the sync tick reads it with a plain HGETALL.
# ARGV[1]: channel, ARGV[2]: breaker name, ARGV[3]: the hash's TTL in ms; then each script's.
# Replies carry epoch -1 when the stored state is unusable (garbage, an epoch from the
# future): the caller then ignores it, and the next transition overwrites it.
_PRELUDE = f"""
for _, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'hash' and kind ~= 'none' then redis.call('DEL', key) end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function is_int(n, high)
  return n ~= nil and n == math.floor(n) and n >= 0 and n <= high
end
local st = redis.call('HMGET', KEYS[1], 'state', 'epoch', 'until')
local state = st[1] or 'closed'
local epoch = tonumber(st[2] or '0')
local until_ms = tonumber(st[3] or '0')
local valid = (state == 'closed' or state == 'open' or state == 'forced_open'
  or state == 'disabled') and is_int(epoch, now + {EPOCH_SLACK_MS})
  and is_int(until_ms, {MAX_COUNT})
if not valid then
  state = 'closed'
  epoch = 0
  until_ms = now
end
local reported = epoch
if not valid then reported = -1 end
local remaining = 0
if st[3] then remaining = until_ms - now end
"""

_SET_STATE = """
local function set_state(new, open_ms)
  local new_epoch = math.max(epoch + 1, now)
  redis.call('HSET', KEYS[1], 'state', new, 'epoch', new_epoch, 'until', now + open_ms)
  if new == 'forced_open' or new == 'disabled' then
    redis.call('PERSIST', KEYS[1])
  else
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
  end
  redis.call('DEL', KEYS[2])
  redis.call('PUBLISH', ARGV[1], new .. ' ' .. new_epoch .. ' ' .. open_ms .. ' ' .. ARGV[2])
  return {new, new_epoch, open_ms, 1}
end
"""

# The probe tally holds small non-negative integers only; anything else resets it.
_CLEAN_TALLY = """
local tally = redis.call('HVALS', KEYS[2])
for i = 1, #tally do
  if not is_int(tonumber(tally[i]), 1000000000) then
    redis.call('DEL', KEYS[2])
    break
  end
end
"""

# ARGV[4]: new state, ARGV[5]: expected epoch ('' = unconditional), ARGV[6]: open ms.
TRANSITION_SCRIPT: Final = (
    _PRELUDE
    + _SET_STATE
    + """
if ARGV[5] ~= '' and valid and tonumber(ARGV[5]) ~= epoch then
  return {state, reported, remaining, 0}
end
return set_state(ARGV[4], tonumber(ARGV[6]))
"""
)

# ARGV[4]: epoch, ARGV[5]: cap, ARGV[6]: probe ttl ms.
# Returns {granted (1, 0, or 2: no usable fleet state, probe locally), state, epoch, remaining}.
TAKE_PROBE_SCRIPT: Final = (
    _PRELUDE
    + _CLEAN_TALLY
    + """
if not valid then
  return {2, state, -1, 0}
end
if state ~= 'open' or epoch ~= tonumber(ARGV[4]) then
  return {0, state, epoch, remaining}
end
local taken = redis.call('HINCRBY', KEYS[2], 'taken', 1)
if taken > tonumber(ARGV[5]) then
  redis.call('HINCRBY', KEYS[2], 'taken', -1)
  return {0, state, epoch, remaining}
end
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return {1, state, epoch, remaining}
"""
)

# ARGV[4]: epoch, ARGV[5]: outcome (-1 = released, else the FAILURE|SLOW bits), ARGV[6]:
# planned probes, ARGV[7]: failure rate, ARGV[8]: consecutive mode (0/1), ARGV[9]: slow-call
# rate, ARGV[10]: open ms, ARGV[11]: probe ttl ms. Judges the fleet's probes like
# CircuitBreaker._check_half_open.
PROBE_DONE_SCRIPT: Final = (
    _PRELUDE
    + _SET_STATE
    + _CLEAN_TALLY
    + """
if not valid then
  return {state, -1, 0, 0}
end
if state ~= 'open' or epoch ~= tonumber(ARGV[4]) then
  return {state, epoch, remaining, 0}
end
local outcome = tonumber(ARGV[5])
if outcome < 0 then
  if tonumber(redis.call('HGET', KEYS[2], 'taken') or '0') > 0 then
    redis.call('HINCRBY', KEYS[2], 'taken', -1)
  end
  return {state, epoch, remaining, 0}
end
local done = redis.call('HINCRBY', KEYS[2], 'done', 1)
local failed = redis.call('HINCRBY', KEYS[2], 'failures', outcome % 2)
local slowed = redis.call('HINCRBY', KEYS[2], 'slow', outcome >= 2 and 1 or 0)
redis.call('PEXPIRE', KEYS[2], ARGV[11])
local planned = tonumber(ARGV[6])
if done < planned then
  return {state, epoch, remaining, 0}
end
local reopen
if ARGV[8] == '1' then
  reopen = failed > 0
else
  reopen = failed / planned >= tonumber(ARGV[7])
end
if reopen or slowed / planned >= tonumber(ARGV[9]) then
  return set_state('open', tonumber(ARGV[10]))
end
return set_state('closed', 0)
"""
)

# KEYS[1]: one of the store's hashes that holds another type (someone else's write): gone.
REPAIR_SCRIPT: Final = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'hash' and kind ~= 'none' then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

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
        msg = "RedisStore needs redis-py: pip install 'resilience-mesh[redis]'"
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


def _key_error(exc: BaseException) -> bool:
    """True if Redis refused a command because of the key's contents, not Redis itself.

    WRONGTYPE (someone wrote another type under our key) and a script error (our script met
    data it does not expect) are that key's problem; anything else (a timeout, OOM, READONLY,
    NOPERM) is the store's.
    """
    import redis.exceptions

    if not isinstance(exc, redis.exceptions.ResponseError):
        return False
    if isinstance(exc, redis.exceptions.NoScriptError):
        return False
    text = str(exc)
    return text.startswith("WRONGTYPE") or "user_script" in text


class _Op:
    """A write for the sync thread: a transition, or a probe's outcome (with its waiters)."""

    __slots__ = ("args", "binding", "done", "kind", "running")

    def __init__(self, kind: str, binding: RedisBinding, *args: object) -> None:
        self.kind = kind
        self.binding = binding
        self.args = args
        self.running = False  # taken off the queue by a thread that is running it
        self.done = threading.Event()


class _Job:
    __slots__ = ("done", "fn", "result")

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: object = None


class _ProbeLane:
    """A thread that talks to Redis for callers, who wait for it with a deadline.

    A caller that did the I/O itself could block for several round trips (a fresh
    connection's handshake, a script load, the command), each bounded only by the socket
    timeout. Here the caller waits on an event, at most its budget; the lane finishes the
    request anyway and applies its result. Started on first use (the first HALF_OPEN probe).
    """

    __slots__ = ("_jobs", "_lock", "_name", "_ready", "_stopped", "_thread")

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: collections.deque[_Job] = collections.deque()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def submit(self, fn: Callable[[], object]) -> _Job:
        """Run *fn* in the lane; its job's ``done`` is set when it has run (or never will)."""
        job = _Job(fn)
        with self._lock:
            if self._stopped:
                job.done.set()
                return job
            self._jobs.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        self._ready.set()
        return job

    def _run(self) -> None:
        jobs = self._jobs
        while not self._stopped:
            self._ready.wait()
            self._ready.clear()
            while jobs and not self._stopped:
                job = jobs.popleft()
                try:
                    job.result = job.fn()  # the functions catch their own errors
                finally:
                    job.done.set()
        while jobs:
            jobs.popleft().done.set()

    def stop(self) -> None:
        """Stop the thread; jobs not yet run are dropped (their waiters are released)."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        self._ready.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)


class _Published:
    """A hash where each process publishes its own counts under "w:<process id>".

    A live process rewrites its field when its counts change (and every ``stale / 3``
    seconds while it is active), and rewrites its heartbeat every ``stale / 3`` seconds. A
    field unchanged for ``stale`` seconds whose process's heartbeat stopped too belongs to a
    process that is gone: it is ignored, then deleted. An all-zero window is never written
    unless it replaces a non-zero one: an unused breaker leaves no key behind.
    """

    __slots__ = (
        "_last_pub",
        "_last_snapshot",
        "_nonzero",
        "_seen",
        "_version",
        "changed",
        "field",
        "key",
        "store",
        "ttl_ms",
    )

    def __init__(self, store: RedisStore, key: str, ttl: float) -> None:
        self.store = store
        self.key = key
        self.field = f"w:{store.process_id}"
        self.ttl_ms = int(max(store.key_ttl, ttl) * 1000)
        self._last_snapshot = ""
        self._last_pub = 0.0
        self._version = 0
        self._nonzero = False
        self.changed = False  # the last snapshot differed from the one before
        # Other processes' fields: name -> (value, when it was first seen with that value).
        self._seen: dict[bytes, tuple[bytes, float]] = {}

    def _publish(self, text: str, empty: bool, now: float, refresh: float) -> str:
        if empty and not self._nonzero:
            return ""  # nothing counted, nothing published: nothing to say
        self.changed = text != self._last_snapshot
        if not self.changed and now - self._last_pub < refresh:
            return ""
        self._nonzero = not empty
        self._last_snapshot = text
        self._last_pub = now
        self._version += 1
        return f"{text}:{self._version}"

    def _others(self, fields: dict[bytes, bytes], now: float) -> tuple[list[bytes], list[bytes]]:
        """The other live processes' raw values, and the fields of dead ones."""
        own = self.field.encode()
        stale = self.store.stale
        live = self.store._live_peers
        seen = self._seen
        fresh: dict[bytes, tuple[bytes, float]] = {}
        values: list[bytes] = []
        dead: list[bytes] = []
        for key, value in fields.items():
            if not key.startswith(b"w:") or key == own:
                continue
            previous = seen.get(key)
            since = previous[1] if previous is not None and previous[0] == value else now
            fresh[key] = (value, since)
            if now - since > stale and key[2:] not in live:
                dead.append(key)
            else:
                values.append(value)
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

    Methods called by the breaker under its lock only append to the store's queue; the ones
    that may wait for Redis (`take_probe`, `settle`) are called outside the lock, and only
    in HALF_OPEN.
    """

    __slots__ = (
        "_breaker_ref",
        "active_until",
        "dirty",
        "epoch",
        "fleet_state",
        "limit",
        "local_state",
        "name",
        "outcomes",
        "probes_key",
        "watching",
    )

    def __init__(self, store: RedisStore, breaker: CircuitBreaker) -> None:
        config = breaker.config
        # Hash tags keep one breaker's keys in one cluster slot.
        base = f"{store.prefix}{{{breaker.name}}}"
        super().__init__(store, base, 2 * config.open_duration)
        self.name = breaker.name
        self._breaker_ref: Callable[[], CircuitBreaker | None] = weakref.ref(breaker)
        self.probes_key = f"{base}:probes"
        # The most calls (or run of failures) a peer's window of this breaker may report.
        if config.window_seconds is None:
            self.limit = max(config.window, config.consecutive_failures or 0)
        else:
            self.limit = MAX_COUNT
        # The fleet epoch and state this process last applied; 0 = nothing seen yet.
        self.epoch = 0
        self.fleet_state = "unknown"
        self.local_state = breaker.state.value
        # Read the hash on the next tick (new binding, a pub/sub message, a rejoin).
        self.dirty = True
        # Read every tick until then (the window changed recently).
        self.active_until = 0.0
        # Read on the last regular tick: the breaker holds the others' counts.
        self.watching = False
        # This breaker's probe outcomes not yet judged in Redis (guarded by the queue lock).
        self.outcomes: list[_Op] = []

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The bound breaker, or None once it was garbage-collected."""
        return self._breaker_ref()

    @property
    def shared(self) -> bool:
        """True while the store is connected: the fleet decides; else the breaker is local."""
        return self.store.healthy

    @property
    def hot(self) -> bool:
        """HALF_OPEN here: read every tick while the fleet's probes are under way.

        (Every other change of the fleet state comes with a message, which marks the
        breaker dirty: an OPEN breaker nobody calls is not read again and again.)
        """
        return self.local_state == "half_open"

    # ---------------------------------------------------------------- called by the breaker

    def transition(self, new: str, manual: bool) -> None:
        """A local transition to *new* (lock held): share it through the sync thread."""
        self.local_state = new
        self.store._watch.add(self)  # a set's add is atomic: safe from any thread
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
            store._drop_queued(self, "transition")
        store._enqueue(_Op("transition", self, new, expected))

    def take_probe(self) -> bool:
        """Take one of the fleet's HALF_OPEN probe slots (outside the breaker's lock).

        False when the fleet has no slot left (or moved on: the new state is applied here).
        True without asking Redis while the store is degraded (local probes only), and when
        Redis does not answer within the store's ``timeout``.
        """
        return self.store._take_probe(self)

    def probe_done(self, outcome: int) -> bool:
        """A probe finished with *outcome* (lock held). True: the fleet will judge it."""
        if not self.store.healthy:
            return False
        self.store._enqueue(_Op("probe_done", self, self.epoch, outcome))
        return True

    def settle(self) -> None:
        """After `probe_done` returned True (outside the lock): get the fleet's verdict now.

        Waits at most what is left of the probe's ``timeout``; if the outcome decided the
        probes, the verdict is applied before this returns, so this caller's next call sees
        it. Otherwise the verdict reaches this process as it reaches every other.
        """
        self.store._settle(self)

    def probe_released(self) -> None:
        """A probe ended with no outcome (cancelled or ignored): give its slot back."""
        if self.store.healthy:
            self.store._enqueue(_Op("probe_done", self, self.epoch, -1))

    # ---------------------------------------------------------------- called by the store

    def snapshot(self, now: float, refresh: float) -> str:
        """This process's window: "epoch:calls:failures:slow:run:version" (or '')."""
        breaker = self.breaker
        if breaker is None:
            return ""
        calls, failures, slow, run = breaker._store_snapshot()
        text = f"{self.epoch}:{calls}:{failures}:{slow}:{run}"
        return self._publish(text, not (calls or run), now, refresh)

    def read(
        self, fields: dict[bytes, bytes], now: float, redis_now: int
    ) -> tuple[tuple[str, int, int | None] | None, tuple[int, int, int, int], list[bytes]]:
        """Parse the breaker's hash: (state, epoch, until), the others' totals, dead fields.

        The state is None when unusable; each peer's window is checked on its own, and a bad
        one is left out of the totals. Problems are reported by kind, never by value.
        """
        store = self.store
        try:
            record: tuple[str, int, int | None] | None = fleet_state(fields, redis_now)
        except BadRecord as bad:
            store._report(self.name, bad.what)
            record = None
        values, dead = self._others(fields, now)
        if record is None:
            return None, _NO_COUNTS, dead
        epoch = record[1]
        calls = failures = slow = run = 0
        for value in values:
            try:
                window = peer_window(value, epoch, self.limit)
            except BadRecord as bad:
                store._report(self.name, bad.what)
                continue
            if window is not None:
                calls += window.calls
                failures += window.failures
                slow += window.slow
                run += window.run
        return record, (calls, failures, slow, run), dead

    def apply(self, state: str, epoch: int, remaining_ms: float, why: str) -> None:
        """Adopt the fleet's *state* if *epoch* is newer than the one applied (any thread).

        An OPEN state lasts at most this breaker's own ``open_duration``, whatever Redis says.
        """
        breaker = self.breaker
        if breaker is None or state not in FLEET_STATES or epoch < 0:
            return
        with self.store._apply_lock:
            if epoch <= self.epoch:
                if epoch == 0 and self.epoch:
                    # The breaker's hash was deleted: the fleet forgot it, start afresh.
                    self.epoch = 0
                    self.fleet_state = self.local_state = "closed"
                    breaker._store_apply("closed", 0.0, "fleet state deleted")
                return
            self.epoch = epoch
            self.fleet_state = self.local_state = state
            self.store._watch.add(self)
            remaining = open_seconds(remaining_ms, breaker.config.open_duration)
            breaker._store_apply(state, remaining, why)

    def apply_counts(self, counts: tuple[int, int, int, int]) -> None:
        """Give the breaker the other processes' window totals; it may trip on them."""
        breaker = self.breaker
        if breaker is not None:
            breaker._store_counts(counts)

    def local_verdict(self) -> None:
        """The fleet cannot judge the probes (its state is unusable): judge them here."""
        breaker = self.breaker
        if breaker is not None:
            breaker._store_local_verdict()

    def go_local(self) -> None:
        """The store lost Redis: forget the others' counts; judge pending probes locally."""
        breaker = self.breaker
        if breaker is not None:
            breaker._store_counts(_NO_COUNTS)
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
        ttl: _validate.Duration,
        clock: _validate.Clock,
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

    __slots__ = ("_budget_ref", "name")

    def __init__(self, store: RedisStore, budget: SharedRetryBudget) -> None:
        super().__init__(store, f"{store.prefix}{{budget:{budget.name}}}", 2 * budget.ttl)
        self.name = f"budget:{budget.name}"
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
        return self._publish(f"{calls}:{retries}", not (calls or retries), now, refresh)

    def read(self, fields: dict[bytes, bytes], now: float) -> list[bytes]:
        """Give the budget the other processes' totals; return the fields of dead ones."""
        values, dead = self._others(fields, now)
        calls = retries = 0
        for value in values:
            try:
                peer_calls, peer_retries = budget_window(value)
            except BadRecord as bad:
                self.store._report(self.name, bad.what)
                continue
            calls += peer_calls
            retries += peer_retries
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
        self._errors = _redis_errors()
        self._shas: dict[str, str] = {}
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
        self._queue: collections.deque[_Op] = collections.deque()
        self._queue_lock = threading.Lock()  # guards _queue, _Op.running, binding.outcomes
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
        self._lane = _ProbeLane(f"resilience-redis-probe[{self.prefix}]")
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
            binding.outcomes = []
            binding.dirty = True
        self._dirty = True
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

    def _sha(self, script: str) -> str:
        sha = self._shas.get(script)
        if sha is None:
            raw = self._client.script_load(_SCRIPTS[script])
            sha = raw.decode() if isinstance(raw, bytes) else str(raw)
            self._shas[script] = sha
        return sha

    def _eval(self, script: str, binding: RedisBinding, *args: object) -> Any:
        import redis.exceptions

        keys = (binding.key, binding.probes_key)
        argv = (self.channel, binding.name, binding.ttl_ms, *args)
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

    def _mark_all_dirty(self) -> None:
        with self._lock:
            for binding in self._bindings.values():
                binding.dirty = True
        self._dirty = True
        self._wake.set()

    def _report(self, name: str, what: str) -> None:
        self._problems.report(self.prefix, name, what)

    # ---------------------------------------------------------------- the write queue

    def _enqueue(self, op: _Op) -> None:
        with self._queue_lock:
            if len(self._queue) >= _QUEUE_LIMIT:
                return  # Redis has been gone for long: local state rules meanwhile
            self._queue.append(op)
            if op.kind == "probe_done":
                op.binding.outcomes.append(op)
        self._wake.set()

    def _drop_queued(self, binding: RedisBinding, kind: str) -> None:
        """Forget *binding*'s queued ops of *kind* not yet taken by a thread."""
        with self._queue_lock:
            for op in [op for op in self._queue if op.binding is binding and op.kind == kind]:
                self._queue.remove(op)

    def _finish(self, op: _Op) -> None:
        with self._queue_lock:
            if op.kind == "probe_done" and op in op.binding.outcomes:
                op.binding.outcomes.remove(op)
        op.done.set()

    def _requeue(self, ops: list[_Op]) -> None:
        """Put *ops* back at the head of the queue (Redis failed; replayed on rejoin)."""
        with self._queue_lock:
            for op in reversed(ops):
                op.running = False
                self._queue.appendleft(op)

    def _drain(self) -> None:
        queue = self._queue
        while True:
            with self._queue_lock:
                if not queue:
                    return
                op = queue.popleft()
                op.running = True
            try:
                self._run_queued(op)
            except BaseException:
                self._requeue([op])
                raise

    def _run_queued(self, op: _Op) -> None:
        """Run *op* and mark it done; a Redis error is raised with *op* not done."""
        try:
            self._run_op(op)
        except self._errors as exc:
            if not _key_error(exc):
                raise
            self._report(op.binding.name, "wrong type")
        except BadRecord as bad:
            self._report(op.binding.name, bad.what)
        except Exception as exc:  # a bug must not stop the queue: drop this op
            self._log_bug(exc)
        self._finish(op)

    def _run_op(self, op: _Op) -> None:
        binding = op.binding
        breaker = binding.breaker
        if breaker is None:
            return
        config = breaker.config
        if op.kind == "transition":
            new, expected = op.args
            open_ms = int(config.open_duration * 1000) if new == "open" else 0
            reply = self._eval("transition", binding, new, expected, open_ms)
        else:
            epoch, outcome = op.args
            reply = self._eval(
                "probe_done",
                binding,
                epoch,
                outcome,
                config.half_open_calls,
                repr(config.failure_rate),
                "1"
                if config.consecutive_failures is not None and not config.failure_rate_explicit
                else "0",
                repr(config.slow_call_rate),
                int(config.open_duration * 1000),
                self._probe_ttl_ms(config.open_duration),
            )
        state, epoch, remaining = script_reply(*reply[:3])
        if epoch < 0:
            binding.local_verdict()  # the fleet state is unusable: no fleet verdict
        else:
            binding.apply(state, epoch, remaining, "fleet state")

    # ---------------------------------------------------------------- probes (callers)

    def _take_probe(self, binding: RedisBinding) -> bool:
        if not self.healthy:
            return True
        breaker = binding.breaker
        if breaker is None:
            return True
        config = breaker.config
        start = time.monotonic()
        job = self._lane.submit(lambda: self._request_probe(binding, config))
        answered = job.done.wait(self.timeout)
        left = self.timeout - (time.monotonic() - start)
        _probe_budget.set((id(binding), left))
        if not answered:
            return True  # Redis too slow: probe on local state (the lane finishes the request)
        return job.result is not False

    def _request_probe(self, binding: RedisBinding, config: Any) -> bool:
        """In the lane: ask Redis for a probe slot; False if refused (fleet state applied)."""
        try:
            granted, *rest = self._eval(
                "take_probe",
                binding,
                binding.epoch,
                config.half_open_calls,
                self._probe_ttl_ms(config.open_duration),
            )
            state, epoch, remaining = script_reply(*rest)
        except self._errors as exc:
            if _key_error(exc):
                self._report(binding.name, "wrong type")
            else:
                self._mark_down(exc)
            return True
        except BadRecord as bad:
            self._report(binding.name, bad.what)
            return True
        except Exception as exc:  # a bug here must not reach the caller either
            self._log_bug(exc)
            return True
        if granted:
            return True  # 1: a fleet slot; 2: no usable fleet state, a local probe
        binding.apply(state, epoch, remaining, "fleet state")
        return False

    def _settle(self, binding: RedisBinding) -> None:
        budget = self.timeout
        entry = _probe_budget.get()
        if entry is not None and entry[0] == id(binding):
            budget = entry[1]
            _probe_budget.set(None)
        if budget <= 0 or not self.healthy:
            return
        deadline = time.monotonic() + budget
        with self._queue_lock:
            pending = list(binding.outcomes)
            mine: list[_Op] = []
            for op in pending:
                if not op.running and op in self._queue:
                    self._queue.remove(op)
                    op.running = True
                    mine.append(op)
        if mine:
            self._lane.submit(lambda: self._run_outcomes(mine))
        for op in pending:
            left = deadline - time.monotonic()
            if left <= 0 or not op.done.wait(left):
                return

    def _run_outcomes(self, ops: list[_Op]) -> None:
        """In the lane: judge a caller's probe outcomes now (not on the next tick)."""
        for index, op in enumerate(ops):
            try:
                self._run_queued(op)
            except self._errors as exc:
                self._requeue(ops[index:])
                self._mark_down(exc)
                return

    @staticmethod
    def _probe_ttl_ms(open_duration: float) -> int:
        return max(_MIN_PROBE_TTL_MS, int(open_duration * 2000))

    # ---------------------------------------------------------------- health

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

    # ---------------------------------------------------------------- the sync thread

    def _sync_loop(self) -> None:
        next_tick = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if not self._healthy and now < self._retry_at:
                wait = self._retry_at - now
            elif self._queue or self._dirty:
                wait = 0.0
            else:
                wait = max(0.0, next_tick - now)
            if wait > 0:
                self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                break
            now = time.monotonic()
            if not self._healthy and now < self._retry_at:
                continue
            regular = now >= next_tick or self._ticks < self._full_until or not self._healthy
            try:
                self._drain()
                self._tick(now, regular)
            except self._errors as exc:
                self._mark_down(exc)
                continue
            except Exception as exc:  # never let a bug kill the thread: log it and carry on
                self._log_bug(exc)
                self._mark_down(exc)
                self._stop.wait(self.sync_interval)
                continue
            self._mark_up()
            if regular:
                next_tick = now + self.sync_interval
                with self._synced:
                    self._ticks += 1
                    self._synced.notify_all()

    def _tick(self, now: float, regular: bool) -> None:
        """One pipeline: TIME, then for each breaker that needs it its window and its hash.

        A *regular* tick (every sync_interval) handles the active breakers, looks at the
        idle ones' windows now and then, writes the heartbeat and renews the keys' TTLs; a
        light tick (a pub/sub message came) only reads the breakers marked dirty.
        """
        dirty = self._dirty
        self._dirty = False  # before reading: a message arriving meanwhile sets it again
        full = regular and self._ticks < self._full_until
        idle_check = regular and (full or now >= self._next_idle_check)
        sweep = regular and now >= self._next_sweep
        heartbeat = regular and now >= self._next_heartbeat
        # Most ticks look at the watched (active) breakers only: the cost of a tick grows
        # with the breakers in use, not with the breakers that exist.
        if dirty or idle_check or sweep:
            bindings = self._live_bindings()
        elif regular:
            bindings = list(self._watch)
        else:
            bindings = []
        budgets = self._live_budgets() if regular else []
        if idle_check:
            self._next_idle_check = now + max(self.sync_interval, _IDLE_CHECK)
        if sweep:
            self._next_sweep = now + self.key_ttl / 4
        refresh = self.stale / 3
        pipe = self._client.pipeline(transaction=False)
        # What each command's reply is for: (what, item).
        plan: list[tuple[str, Any]] = [("time", None)]
        pipe.time()
        if regular and len(self._shas) < len(_SCRIPTS):
            # Loaded here, so that a probe's request is one round trip.
            for script, text in _SCRIPTS.items():
                pipe.script_load(text)
                plan.append(("script", script))
        if heartbeat:
            self._next_heartbeat = now + refresh
            self._heartbeat_version += 1
            pipe.hset(self.heartbeat_key, self.process_id, self._heartbeat_version)
            pipe.pexpire(self.heartbeat_key, int(self.key_ttl * 1000))
            pipe.hgetall(self.heartbeat_key)
            plan += [("write", None), ("ttl", None), ("heartbeats", None)]
        reads: list[RedisBinding] = []
        watch = self._watch
        for binding in bindings:
            read = binding.dirty or full
            binding.dirty = False
            written = False
            if regular:
                if binding.breaker is None:
                    watch.discard(binding)
                    continue
                active = now < binding.active_until or binding.hot
                if active or idle_check:
                    snapshot = binding.snapshot(now, refresh if active else math.inf)
                    if snapshot:
                        self._write(pipe, plan, binding, snapshot, binding.fleet_state)
                        written = active = True
                        if binding.changed:  # activity here: read it for a while
                            binding.active_until = now + self.stale
                read = read or active
                if active:
                    watch.add(binding)
                else:
                    watch.discard(binding)
                if sweep and not written:
                    if binding.fleet_state in _MANUAL_STATES:
                        pipe.persist(binding.key)
                        plan.append(("ttl", binding))
                        read = True  # a deleted hash sends no message: look at it
                    else:
                        pipe.pexpire(binding.key, binding.ttl_ms)
                        plan.append(("touch", binding))
                if not read and binding.watching:
                    binding.watching = False
                    binding.apply_counts(_NO_COUNTS)  # idle: the others' counts go stale
            if read:
                pipe.hgetall(binding.key)
                plan.append(("read", binding))
                reads.append(binding)
        for budget in budgets:
            snapshot = budget.snapshot(now, refresh)
            if snapshot:
                self._write(pipe, plan, budget, snapshot, "")
            elif sweep:
                pipe.pexpire(budget.key, budget.ttl_ms)
                plan.append(("ttl", budget))
            pipe.hgetall(budget.key)
            plan.append(("budget", budget))
        if len(plan) == 1 and not regular:
            return  # a regular tick sends at least TIME: it is how an outage is noticed
        self._exchange(pipe, plan, now, regular)

    @staticmethod
    def _write(
        pipe: Any, plan: list[tuple[str, Any]], item: _Published, snapshot: str, state: str
    ) -> None:
        pipe.hset(item.key, item.field, snapshot)
        # An operator's force_open/disable never expires; anything else does when unused.
        if state in _MANUAL_STATES:
            pipe.persist(item.key)
        else:
            pipe.pexpire(item.key, item.ttl_ms)
        plan += [("write", item), ("ttl", item)]

    def _exchange(self, pipe: Any, plan: list[tuple[str, Any]], now: float, regular: bool) -> None:
        """Send the tick's pipeline and apply what it read, each key on its own."""
        outages = self._outages
        try:
            # Per-command errors come back in place: one bad key is that key's problem.
            replies = pipe.execute(raise_on_error=False)
        except BaseException:
            self._unsent(plan)
            raise
        for reply in replies:
            if isinstance(reply, Exception) and not _key_error(reply):
                self._unsent(plan)
                raise reply  # OOM, READONLY, NOPERM...: the store's problem, not a key's
        seconds, micros = replies[0]
        redis_now = int(seconds) * 1000 + int(micros) // 1000
        cleanup = self._client.pipeline(transaction=False)
        broken: set[str] = set()
        with self._apply_lock:
            if self._outages != outages:
                return  # Redis was declared lost meanwhile: these counts are not to be used
            for (what, item), reply in zip(plan, replies, strict=True):
                if isinstance(reply, Exception):  # WRONGTYPE: repair it, skip it
                    key = self.heartbeat_key if item is None else item.key
                    if key not in broken:
                        broken.add(key)
                        self._report("heartbeats" if item is None else item.name, "wrong type")
                        if item is not None:
                            item.forget_snapshot()
                        cleanup.eval(REPAIR_SCRIPT, 1, key)
                    continue
                try:
                    if what == "read":
                        self._apply_read(item, reply, now, redis_now, cleanup)
                    elif what == "budget":
                        dead = item.read(reply, now)
                        if dead:
                            cleanup.hdel(item.key, *dead)
                    elif what == "heartbeats":
                        dead = self._read_heartbeats(reply, now)
                        if dead:
                            cleanup.hdel(self.heartbeat_key, *dead)
                    elif what == "script":
                        self._shas[item] = reply.decode() if isinstance(reply, bytes) else reply
                    elif what == "touch" and not reply and item.epoch:
                        item.dirty = self._dirty = True  # the hash is gone: look at it
                except Exception as exc:  # one breaker's trouble must not stop the others
                    self._log_bug(exc)
        if len(cleanup):
            cleanup.execute(raise_on_error=False)

    def _unsent(self, plan: list[tuple[str, Any]]) -> None:
        """The tick's pipeline failed: write again and read again on the next ones."""
        for what, item in plan:
            if what == "write" and item is not None:
                item.forget_snapshot()
            elif what == "read":
                item.dirty = self._dirty = True

    def _apply_read(
        self,
        binding: RedisBinding,
        fields: dict[bytes, bytes],
        now: float,
        redis_now: int,
        cleanup: Any,
    ) -> None:
        record, counts, dead = binding.read(fields, now, redis_now)
        if dead:
            cleanup.hdel(binding.key, *dead)
        binding.watching = True
        if record is None:  # unusable: ignored until the next transition overwrites it
            binding.apply_counts(_NO_COUNTS)
            return
        state, epoch, until = record
        binding.fleet_state = state
        remaining = float(until - redis_now) if state == "open" and until is not None else 0.0
        binding.apply(state, epoch, remaining, "fleet state")
        if epoch == binding.epoch:
            binding.apply_counts(counts)

    def _read_heartbeats(self, fields: dict[bytes, bytes], now: float) -> list[bytes]:
        """Note which processes are alive; return the heartbeats of long-dead ones."""
        seen = self._heartbeats
        fresh: dict[bytes, tuple[bytes, float]] = {}
        live: set[bytes] = set()
        dead: list[bytes] = []
        for process, value in fields.items():
            previous = seen.get(process)
            since = previous[1] if previous is not None and previous[0] == value else now
            fresh[process] = (value, since)
            if now - since <= self.stale:
                live.add(process)
            elif now - since > 10 * self.stale:
                dead.append(process)
        self._heartbeats = fresh
        self._live_peers = frozenset(live)
        return dead

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
