"""The store's sync thread: one pipeline per tick publishes this process's counts and reads
the fleet's.

Every ``sync_interval`` (a *regular* tick), one pipeline carries TIME, the heartbeat, this
process's window of each active breaker (HSET, only when it changed) and a read (HGETALL) of
each breaker whose fleet state or counts may have moved; idle breakers cost almost nothing.
A *light* tick (a pub/sub message came) only reads the breakers marked dirty. Replies are
applied key by key: one bad key is that key's problem, not the store's.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Final

from ._bindings import NO_COUNTS, Published, RedisBinding
from ._lua import REPAIR_SCRIPT
from ._redis_client import key_error

if TYPE_CHECKING:
    import threading

    from ._budget import BudgetBinding
    from ._lua import Scripts
    from ._outbox import Outbox

__all__ = ["IDLE_CHECK", "MANUAL_STATES", "SyncThread"]

# An idle breaker (window unchanged, not OPEN) is not read from Redis; its window is looked
# at (locally) this often, to notice when it becomes active.
IDLE_CHECK: Final = 1.0
# Operators' states: they never expire.
MANUAL_STATES: Final = frozenset({"forced_open", "disabled"})


class SyncThread:
    """`RedisStore`'s sync thread (a mixin: the store's state is its own)."""

    if TYPE_CHECKING:
        sync_interval: float
        stale: float
        key_ttl: float
        heartbeat_key: str
        process_id: str
        _client: Any
        _scripts: Scripts
        _outbox: Outbox
        _errors: tuple[type[BaseException], ...]
        _stop: threading.Event
        _wake: threading.Event
        _synced: threading.Condition
        _healthy: bool
        _retry_at: float
        _outages: int
        _ticks: int
        _full_until: int
        _dirty: bool
        _watch: set[RedisBinding]
        _next_idle_check: float
        _next_sweep: float
        _next_heartbeat: float
        _heartbeat_version: int
        _heartbeats: dict[bytes, tuple[bytes, float]]
        _live_peers: frozenset[bytes]

        def _drain(self) -> None: ...

        def _mark_down(self, exc: BaseException) -> None: ...

        def _mark_up(self) -> None: ...

        def _log_bug(self, exc: BaseException) -> None: ...

        def _report(self, name: str, what: str) -> None: ...

        def _live_bindings(self) -> list[RedisBinding]: ...

        def _live_budgets(self) -> list[BudgetBinding]: ...

    def _sync_loop(self) -> None:
        next_tick = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if not self._healthy and now < self._retry_at:
                wait = self._retry_at - now
            elif self._outbox or self._dirty:
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
            self._next_idle_check = now + max(self.sync_interval, IDLE_CHECK)
        if sweep:
            self._next_sweep = now + self.key_ttl / 4
        refresh = self.stale / 3
        pipe = self._client.pipeline(transaction=False)
        # What each command's reply is for: (what, item).
        plan: list[tuple[str, Any]] = [("time", None)]
        pipe.time()
        if regular:
            # Loaded here, so that a probe's request is one round trip.
            for script, text in self._scripts.missing():
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
                if binding.port is None:
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
                    if binding.fleet_state in MANUAL_STATES:
                        pipe.persist(binding.key)
                        plan.append(("ttl", binding))
                        read = True  # a deleted hash sends no message: look at it
                    else:
                        pipe.pexpire(binding.key, binding.ttl_ms)
                        plan.append(("touch", binding))
                if not read and binding.watching:
                    binding.watching = False
                    binding.apply_counts(NO_COUNTS)  # idle: the others' counts go stale
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
        pipe: Any, plan: list[tuple[str, Any]], item: Published, snapshot: str, state: str
    ) -> None:
        pipe.hset(item.key, item.field, snapshot)
        # An operator's force_open/disable never expires; anything else does when unused.
        if state in MANUAL_STATES:
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
            if isinstance(reply, Exception) and not key_error(reply):
                self._unsent(plan)
                raise reply  # OOM, READONLY, NOPERM...: the store's problem, not a key's
        seconds, micros = replies[0]
        redis_now = int(seconds) * 1000 + int(micros) // 1000
        cleanup = self._client.pipeline(transaction=False)
        broken: set[str] = set()
        with self._outbox.apply_lock:
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
                        self._scripts.loaded(item, reply)
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
            binding.apply_counts(NO_COUNTS)
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
