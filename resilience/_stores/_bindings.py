"""A breaker's link to a `RedisStore`: what it publishes, what it reads, what it adopts.

Each process publishes its own counts of a breaker under its own field of the breaker's hash
(`Published`), reads the others', and hands the sum and the fleet's state to the breaker
through its port (`resilience.stores.BreakerPort`). The breaker reports its own moves to its
binding (`RedisBinding`), which queues them in the store's `Outbox`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from .._breaker._state import CircuitState
from ._outbox import RELEASED, Outbox, ProbeOutcome, Transition
from ._records import (
    FLEET_STATES,
    MAX_COUNT,
    BadRecord,
    fleet_state,
    open_seconds,
    peer_window,
)

if TYPE_CHECKING:
    from ._protocol import BreakerPort
    from ._redis_store import RedisStore

__all__ = ["NO_COUNTS", "Published", "RedisBinding"]

NO_COUNTS: Final = (0, 0, 0, 0)
"""A window's totals (calls, failures, slow calls, failure run) when there are none."""


class Published:
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


class RedisBinding(Published):
    """One breaker's link to a `RedisStore` (the breaker calls it; users never do).

    Methods called by the breaker under its lock only append to the store's queue; the ones
    that may wait for Redis (`take_probe`, `settle`) are called outside the lock, and only
    in HALF_OPEN.
    """

    __slots__ = (
        "_port_ref",
        "active_until",
        "dirty",
        "epoch",
        "fleet_state",
        "limit",
        "local_state",
        "name",
        "outbox",
        "probes_key",
        "watching",
    )

    def __init__(self, store: RedisStore, outbox: Outbox, port: BreakerPort) -> None:
        config = port.config
        # Hash tags keep one breaker's keys in one cluster slot.
        base = f"{store.prefix}{{{port.name}}}"
        super().__init__(store, base, 2 * config.open_duration)
        self.name = port.name
        self.outbox = outbox
        # Weak: a breaker nobody uses any more is dropped from the store.
        self._port_ref: Callable[[], BreakerPort | None] = weakref.ref(port)
        self.probes_key = f"{base}:probes"
        # The most calls (or run of failures) a peer's window of this breaker may report.
        if config.window_seconds is None:
            self.limit = max(config.window, config.consecutive_failures or 0)
        else:
            self.limit = MAX_COUNT
        # The fleet epoch and state this process last applied; 0 = nothing seen yet.
        self.epoch = 0
        self.fleet_state = "unknown"
        self.local_state = port.state.value
        # Read the hash on the next tick (new binding, a pub/sub message, a rejoin).
        self.dirty = True
        # Read every tick until then (the window changed recently).
        self.active_until = 0.0
        # Read on the last regular tick: the breaker holds the others' counts.
        self.watching = False

    @property
    def port(self) -> BreakerPort | None:
        """The bound breaker's port, or None once the breaker was garbage-collected."""
        return self._port_ref()

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

    def transition(self, new: CircuitState, manual: bool) -> None:
        """A local transition to *new* (lock held): share it through the sync thread."""
        self.local_state = new.value
        self.store._watch.add(self)  # a set's add is atomic: safe from any thread
        if new is CircuitState.HALF_OPEN:
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
            self.outbox.drop_transitions(self)
        self.outbox.put(Transition(self, new.value, expected))

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
        self.outbox.put(ProbeOutcome(self, self.epoch, outcome))
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
            self.outbox.put(ProbeOutcome(self, self.epoch, RELEASED))

    # ---------------------------------------------------------------- called by the store

    def snapshot(self, now: float, refresh: float) -> str:
        """This process's window: "epoch:calls:failures:slow:run:version" (or '')."""
        port = self.port
        if port is None:
            return ""
        calls, failures, slow, run = port.snapshot()
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
            return None, NO_COUNTS, dead
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
        port = self.port
        if port is None or state not in FLEET_STATES or epoch < 0:
            return
        with self.outbox.apply_lock:
            if epoch <= self.epoch:
                if epoch == 0 and self.epoch:
                    # The breaker's hash was deleted: the fleet forgot it, start afresh.
                    self.epoch = 0
                    self.fleet_state = self.local_state = "closed"
                    port.adopt_state(CircuitState.CLOSED, 0.0, "fleet state deleted")
                return
            self.epoch = epoch
            self.fleet_state = self.local_state = state
            self.store._watch.add(self)
            remaining = open_seconds(remaining_ms, port.config.open_duration)
            port.adopt_state(CircuitState(state), remaining, why)

    def apply_counts(self, counts: tuple[int, int, int, int]) -> None:
        """Give the breaker the other processes' window totals; it may trip on them."""
        port = self.port
        if port is not None:
            port.adopt_counts(counts)

    def local_verdict(self) -> None:
        """The fleet cannot judge the probes (its state is unusable): judge them here."""
        port = self.port
        if port is not None:
            port.judge_locally()

    def go_local(self) -> None:
        """The store lost Redis: forget the others' counts; judge pending probes locally."""
        port = self.port
        if port is not None:
            port.adopt_counts(NO_COUNTS)
            port.judge_locally()
