"""Deadline propagation over HTTP: the headers that carry a caller's remaining budget.

Inbound, a server reads the budget its caller sent (`header_budget`, `inbound_budget`);
outbound, a client writes what remains of its own deadline (`format_milliseconds`). A budget
is data, not code: a malformed or absurd value is never an error, it counts as no budget.

Both ends live here so that they agree on the formats: whole milliseconds (Envoy's
``x-envoy-expected-rq-timeout-ms``, Connect's ``connect-timeout-ms``) and gRPC's
``grpc-timeout`` (digits and a unit).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = [
    "DEADLINE_HEADERS",
    "LONGEST_WAIT",
    "format_milliseconds",
    "header_budget",
    "header_integer",
    "inbound_budget",
    "parse_grpc_timeout",
    "parse_milliseconds",
]

DEADLINE_HEADERS: Final[tuple[tuple[str, str], ...]] = (
    ("x-envoy-expected-rq-timeout-ms", "ms"),
    ("grpc-timeout", "grpc"),
    ("connect-timeout-ms", "ms"),
)
"""Inbound headers that carry the caller's remaining budget, with their format."""

LONGEST_WAIT: Final = threading.TIMEOUT_MAX
"""The longest wait a thread can do (about 292 years): durations beyond it cannot be waited."""

# grpc-timeout units (gRPC PROTOCOL-HTTP2.md), as seconds per unit.
_GRPC_UNITS: Final[Mapping[str, float]] = {
    "H": 3600.0,
    "M": 60.0,
    "S": 1.0,
    "m": 1e-3,
    "u": 1e-6,
    "n": 1e-9,
}
_GRPC_MAX_DIGITS: Final = 8  # the protocol allows at most 8 digits
_MS_MAX_DIGITS: Final = 10  # as Connect's connect-timeout-ms: longer values are not plausible
_ASCII_DIGITS: Final = frozenset("0123456789")


def header_integer(value: str, max_digits: int) -> int | None:
    """A header's whole number: ASCII digits only, at most *max_digits*; else None.

    Example:
        >>> header_integer("120", 10), header_integer("+5", 10), header_integer("5_0", 10)
        (120, None, None)
    """
    # int() alone would accept "+5", " 5", "5_0" and non-ASCII (fullwidth, Arabic-Indic) digits.
    if not value or len(value) > max_digits or not _ASCII_DIGITS.issuperset(value):
        return None
    return int(value)


def parse_milliseconds(value: str) -> float | None:
    """Seconds from a positive whole number of milliseconds; None when malformed or zero.

    Example:
        >>> parse_milliseconds("1500"), parse_milliseconds("-5"), parse_milliseconds("0")
        (1.5, None, None)
    """
    number = header_integer(value.strip(), _MS_MAX_DIGITS)
    if not number:
        return None  # Envoy uses 0 for "no timeout": not a budget
    return number / 1000.0


def parse_grpc_timeout(value: str) -> float | None:
    """Seconds from a ``grpc-timeout`` value such as ``250m`` or ``1S``; None when malformed.

    Example:
        >>> parse_grpc_timeout("250m"), parse_grpc_timeout("2S"), parse_grpc_timeout("2s")
        (0.25, 2.0, None)
    """
    value = value.strip()
    unit = _GRPC_UNITS.get(value[-1:])
    if unit is None:
        return None
    number = header_integer(value[:-1], _GRPC_MAX_DIGITS)
    if not number:
        return None
    return number * unit


_PARSERS: Final = {"ms": parse_milliseconds, "grpc": parse_grpc_timeout}


def header_budget(
    get_header: Mapping[str, str | bytes] | Any,
    headers: Iterable[tuple[str, str]] = DEADLINE_HEADERS,
) -> float | None:
    """The shortest budget in *headers* (name, format pairs, as `DEADLINE_HEADERS`), or None.

    *get_header* is anything with ``.get(name)`` on lower-case names, giving ``str`` or
    ``bytes``. A malformed value is skipped, and so is a budget beyond `LONGEST_WAIT`.

    Example:
        >>> header_budget({"grpc-timeout": b"250m"}, [("grpc-timeout", "grpc")])
        0.25
    """
    budget: float | None = None
    for header, kind in headers:
        raw = get_header.get(header)
        if raw is None:
            continue
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("ascii")
            except UnicodeDecodeError:
                continue
        seconds = _PARSERS[kind](raw)
        if seconds is None or seconds > LONGEST_WAIT:
            continue  # longer than any wait: no budget (a thread could not wait for it)
        if budget is None or seconds < budget:
            budget = seconds
    return budget


def inbound_budget(get_header: Mapping[str, str] | Any) -> float | None:
    """The shortest budget the caller sent in a deadline header, in seconds, or None.

    *get_header* is anything with ``.get(name)`` on lower-case header names (a dict, or a
    framework's case-insensitive headers). Malformed values are ignored, never an error;
    a budget beyond `LONGEST_WAIT` (``grpc-timeout: 99999999H``) counts as none.

    Example:
        >>> inbound_budget({"grpc-timeout": "300m", "x-envoy-expected-rq-timeout-ms": "200"})
        0.2
        >>> inbound_budget({"grpc-timeout": "soon"}) is None
        True
    """
    return header_budget(get_header, DEADLINE_HEADERS)


def format_milliseconds(seconds: float) -> str:
    """An outbound millisecond header value: whole milliseconds rounded down, at least 1.

    Rounded down, so a server is never promised more than remains; never ``0``, which
    Envoy reads as "no deadline at all" (a caller with under 1 ms left should not send).

    Example:
        >>> format_milliseconds(0.2509), format_milliseconds(2.0), format_milliseconds(0.0004)
        ('250', '2000', '1')
    """
    ms = int(seconds * 1000)
    return str(ms) if ms > 0 else "1"
