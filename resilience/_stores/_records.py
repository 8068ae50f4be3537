"""What a `RedisStore` reads from Redis, validated: Redis data is input, not truth.

Anyone who can write to the store's Redis (another application on the same prefix, a partial
restore, a bug, an attacker) can put anything in a breaker's hash or on the store's channel.
Every value read is parsed here on its own and checked for type, range and plausibility. A
bad value raises `BadRecord`, which names *what* was wrong and never the value (logs must not
copy Redis data); the store then ignores that one value -- one peer's window, one breaker's
state -- while every other value and every other breaker carries on. `ProblemLog` reports
each bad key once, then at most once a minute.

Everything here is pure: bytes in, numbers out, no I/O.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Final, NamedTuple

__all__ = [
    "EPOCH_SLACK_MS",
    "FLEET_STATES",
    "MAX_COUNT",
    "BadRecord",
    "FleetState",
    "ProblemLog",
    "Window",
    "budget_window",
    "fleet_state",
    "message_name",
    "open_seconds",
    "peer_window",
    "script_reply",
    "uint",
]

# The states written to Redis (HALF_OPEN is derived: OPEN whose time is up).
FLEET_STATES: Final = frozenset({"closed", "open", "forced_open", "disabled"})
# No number we write comes near this (counts, epochs and times in ms, ~1.7e12 in 2024);
# anything above it is not ours.
MAX_COUNT: Final = 10**15
# Epochs are Redis times in milliseconds (bumped by one when two writes share a millisecond).
# One further ahead of Redis's clock than this was not written by us: it would make every
# process ignore the real epochs that follow.
EPOCH_SLACK_MS: Final = 60_000
# The longest digit string accepted (an epoch in ms has 13 digits).
_MAX_DIGITS: Final = 16
# A key's problems are logged at most this often (at DEBUG level in between).
_LOG_EVERY: Final = 60.0
# Keys remembered for rate-limiting; beyond this the memory is cleared (a flood of bad keys
# may log again, but memory stays bounded).
_MAX_KEYS_LOGGED: Final = 10_000


class BadRecord(ValueError):
    """A value read from Redis is malformed; ``what`` names the part (never the value)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def uint(raw: object, what: str, limit: int = MAX_COUNT) -> int:
    """A non-negative integer <= *limit*: ASCII digits from Redis, or a script's integer.

    Example:
        >>> uint(b"42", "calls")
        42
        >>> uint(b"-1", "calls")
        Traceback (most recent call last):
        ...
        resilience._stores._records.BadRecord: calls
    """
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, bytes) and 0 < len(raw) <= _MAX_DIGITS and raw.isdigit():
        value = int(raw)  # bytes.isdigit() is ASCII-only: no '-', '+', '_', ' ' or '1e9'
    else:
        raise BadRecord(what)
    if not 0 <= value <= limit:
        raise BadRecord(what)
    return value


class FleetState(NamedTuple):
    """A breaker's fleet state from its hash: *until* is Redis time in ms (OPEN only)."""

    state: str
    epoch: int
    until: int | None


def fleet_state(fields: dict[bytes, bytes], redis_now_ms: int) -> FleetState:
    """The ``state``, ``epoch`` and ``until`` fields of a breaker's hash, validated.

    Missing fields mean "nothing decided yet" (CLOSED at epoch 0), as after the hash was
    deleted. Raises `BadRecord` if any of them is malformed or the epoch is implausibly far
    ahead of Redis's clock.

    Example:
        >>> fleet_state({b"state": b"open", b"epoch": b"5", b"until": b"900"}, 1000)
        FleetState(state='open', epoch=5, until=900)
        >>> fleet_state({}, 1000)
        FleetState(state='closed', epoch=0, until=None)
    """
    raw_state = fields.get(b"state")
    state = "closed"
    if raw_state is not None:
        state = raw_state.decode("ascii", "replace")
        if state not in FLEET_STATES:
            raise BadRecord("state")
    raw_epoch = fields.get(b"epoch")
    epoch = 0 if raw_epoch is None else uint(raw_epoch, "epoch")
    if epoch > redis_now_ms + EPOCH_SLACK_MS:
        raise BadRecord("epoch")
    raw_until = fields.get(b"until")
    until = None if raw_until is None else uint(raw_until, "until")
    return FleetState(state, epoch, until)


class Window(NamedTuple):
    """A process's window totals: calls, failures, slow calls, and its run of failures."""

    calls: int
    failures: int
    slow: int
    run: int


def peer_window(value: bytes, epoch: int, limit: int) -> Window | None:
    """Another process's window, "epoch:calls:failures:slow:run:version", validated.

    None when it was counted under another epoch (not part of this window). Counts are
    capped at *limit*, the most a window of this breaker can hold (a peer configured with a
    larger window cannot outweigh this one). Raises `BadRecord` if malformed.

    Example:
        >>> peer_window(b"7:10:4:0:2:3", 7, 100)
        Window(calls=10, failures=4, slow=0, run=2)
        >>> peer_window(b"6:10:4:0:2:3", 7, 100) is None
        True
    """
    parts = value.split(b":")
    if len(parts) != 6:
        raise BadRecord("peer window")
    numbers = [uint(part, "peer window") for part in parts]
    if numbers[0] != epoch:
        return None
    calls, failures, slow, run = numbers[1:5]
    if failures > calls or slow > calls:
        raise BadRecord("peer window")
    calls = min(calls, limit)
    return Window(calls, min(failures, calls), min(slow, calls), min(run, limit))


def budget_window(value: bytes) -> tuple[int, int]:
    """Another process's retry-budget totals, "calls:retries:version", validated.

    Example:
        >>> budget_window(b"100:3:9")
        (100, 3)
    """
    parts = value.split(b":")
    if len(parts) != 3:
        raise BadRecord("retry budget window")
    calls, retries, _version = (uint(part, "retry budget window") for part in parts)
    return calls, retries


def script_reply(state: object, epoch: object, remaining: object) -> tuple[str, int, int]:
    """(state, epoch, remaining ms) from one of the store's scripts, validated.

    Epoch -1 is the scripts' way of saying "the stored state is unusable" (they never write
    one); remaining may be negative (an OPEN state whose time is up).

    Example:
        >>> script_reply(b"open", 17, -3)
        ('open', 17, -3)
    """
    text = state.decode("ascii", "replace") if isinstance(state, bytes) else ""
    if text not in FLEET_STATES:
        raise BadRecord("script reply")
    number = -1 if epoch == -1 else uint(epoch, "script reply")
    if isinstance(remaining, bool) or not isinstance(remaining, int) or abs(remaining) > MAX_COUNT:
        raise BadRecord("script reply")
    return text, number, remaining


def message_name(data: object) -> str | None:
    """The breaker named by a pub/sub message "state epoch open_ms name", or None.

    Only the name is used: the store re-reads that breaker's hash instead of trusting the
    rest of the message (anyone can PUBLISH).

    Example:
        >>> message_name(b"open 1700000000000 30000 payments")
        'payments'
        >>> message_name(b"hello") is None
        True
    """
    if not isinstance(data, bytes):
        return None
    parts = data.split(b" ", 3)
    if len(parts) != 4 or not parts[3]:
        return None
    try:
        return parts[3].decode()
    except UnicodeDecodeError:
        return None


def open_seconds(remaining_ms: float, open_duration: float) -> float:
    """Seconds an OPEN state has left, within [0, open_duration] (never more than ours).

    Example:
        >>> open_seconds(float("inf"), 30.0), open_seconds(-5.0, 30.0), open_seconds(1500, 30.0)
        (30.0, 0.0, 1.5)
    """
    if math.isnan(remaining_ms):
        return 0.0
    return min(max(remaining_ms, 0.0) / 1000.0, open_duration)


class ProblemLog:
    """Log a bad record once per key, then at most once a minute (DEBUG in between).

    Only the store's prefix, the breaker's name and the kind of problem are logged: never
    a value read from Redis.
    """

    __slots__ = ("_at", "_logger")

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._at: dict[tuple[str, str], float] = {}

    def report(self, prefix: str, name: str, what: str) -> None:
        """*what* was malformed in the data of breaker (or budget) *name*."""
        now = time.monotonic()
        key = (name, what)
        at = self._at.get(key)
        quiet = at is not None and now - at < _LOG_EVERY
        if not quiet:
            if len(self._at) >= _MAX_KEYS_LOGGED:
                self._at.clear()
            self._at[key] = now
        self._logger.log(
            logging.DEBUG if quiet else logging.WARNING,
            "Redis store %r: ignored bad data (%s) in Redis for %r; "
            "the other breakers are not affected, and the next write replaces it",
            prefix,
            what,
            name,
        )
