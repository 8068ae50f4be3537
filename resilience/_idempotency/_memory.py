"""`MemoryStore`: idempotency records in this process, bounded (LRU) and expiring."""

from __future__ import annotations

import collections
import itertools
import threading
import time
from typing import Final, TypeAlias

from .. import _validate
from .._public import public
from ._backend import Busy, Claimed, ClaimResult, Done

__all__ = ["DEFAULT_MAXSIZE", "MemoryStore"]

DEFAULT_MAXSIZE: Final = 10_000


# One key's record: (fingerprint, token, until, value). Running: token set, until = the lock's
# expiry; done: token None, until = the result's expiry. A tuple of str/float/bytes, which
# the garbage collector stops tracking: ten thousand records cost it nothing.
_Record: TypeAlias = tuple[str, str | None, float, bytes]


class MemoryStore:
    """Idempotency records kept in this process: bounded (least recently used go first) and
    expiring.

    Right for one process (a script, a single worker, tests). Several workers each have
    their own records, so a key is only "once" per process: use `RedisStore` to share them.
    A record still running is never evicted while its lock holds; when every record is
    running, the store grows past ``maxsize`` rather than let an effect run twice.

    Args:
        maxsize: how many records to keep at most.
        clock: a monotonic clock (seconds); inject a `FakeClock` in tests.

    Example:
        >>> from resilience.idempotency import idempotent
        >>> from resilience.stores import MemoryStore
        >>> calls = []
        >>> @idempotent(key=lambda n: str(n), store=MemoryStore(maxsize=100), ttl=60)
        ... def double(n: int) -> int:
        ...     calls.append(n)
        ...     return 2 * n
        >>> double(4), double(4), calls
        (8, 8, [4])
    """

    __slots__ = ("_clock", "_lock", "_records", "_tokens", "maxsize")

    def __init__(
        self, *, maxsize: int = DEFAULT_MAXSIZE, clock: _validate.Clock = time.monotonic
    ) -> None:
        self.maxsize = _validate.required_integer("maxsize", maxsize)
        self._clock = _validate.clock("clock", clock)
        self._records: collections.OrderedDict[str, _Record] = collections.OrderedDict()
        self._lock = threading.Lock()
        # Tokens need only be unique within this store: a counter is enough (and cheap).
        self._tokens = itertools.count(1)

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"MemoryStore(maxsize={self.maxsize}, records={len(self._records)})"

    # ---------------------------------------------------------------- the backend protocol

    def claim(self, key: str, fingerprint: str, lock_timeout: float) -> ClaimResult:
        """Take *key* (a new record), or report the finished result or the running owner."""
        now = self._clock()
        records = self._records
        with self._lock:
            record = records.get(key)
            if record is not None:
                if now < record[2]:
                    records.move_to_end(key)
                    if record[1] is None:
                        return Done(record[0], record[3])
                    return Busy(record[0], record[2] - now)
                del records[key]  # expired: re-inserted below as the most recent
            # Absent, expired, or a lock older than lock_timeout: this caller takes it.
            token = str(next(self._tokens))
            records[key] = (fingerprint, token, now + lock_timeout, b"")
            if len(records) > self.maxsize:
                self._evict(now)
            return Claimed(token)

    def complete(self, key: str, token: str, value: bytes, ttl: float) -> None:
        """Keep *value* for *ttl* seconds if *token* still owns *key*."""
        now = self._clock()
        records = self._records
        with self._lock:
            record = records.get(key)
            if record is None or record[1] != token:
                return  # taken over (or evicted after its lock ran out): the newer owner wins
            records[key] = (record[0], None, now + ttl, value)
            records.move_to_end(key)

    def release(self, key: str, token: str) -> None:
        """Forget *key*'s running record if *token* still owns it."""
        with self._lock:
            record = self._records.get(key)
            if record is not None and record[1] == token:
                del self._records[key]

    async def aclaim(self, key: str, fingerprint: str, lock_timeout: float) -> ClaimResult:
        """`claim` (no I/O: the lock is held for microseconds)."""
        return self.claim(key, fingerprint, lock_timeout)

    async def acomplete(self, key: str, token: str, value: bytes, ttl: float) -> None:
        """`complete` (no I/O)."""
        self.complete(key, token, value, ttl)

    async def arelease(self, key: str, token: str) -> None:
        """`release` (no I/O)."""
        self.release(key, token)

    # ---------------------------------------------------------------- internals

    def _evict(self, now: float) -> None:
        """Drop least recently used records until within maxsize (lock held).

        A live lock is moved to the recent end instead: evicting it would let a second
        caller run the effect. Each step is O(1); at most one pass over the records.
        """
        records = self._records
        for _ in range(len(records)):
            if len(records) <= self.maxsize:
                return
            key = next(iter(records))
            record = records[key]
            if record[1] is not None and now < record[2]:
                records.move_to_end(key)
            else:
                del records[key]


public("resilience.stores", MemoryStore)
