"""Deadline headers written by a client read back as no more than the client had left."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from resilience._propagation import (
    format_milliseconds,
    header_integer,
    inbound_budget,
    parse_milliseconds,
)


@given(st.floats(min_value=0.001, max_value=3.0e6, allow_nan=False))
def test_a_written_budget_reads_back_no_larger_and_within_a_millisecond(seconds: float) -> None:
    """format then parse: never more than remained (but for float rounding), less by < 1 ms."""
    read = parse_milliseconds(format_milliseconds(seconds))
    assert read is not None
    assert seconds - 0.001 < read <= seconds * (1 + 1e-12)


def test_under_one_millisecond_is_written_as_one_never_zero() -> None:
    """0 means "no deadline" to Envoy, so the smallest value written is 1."""
    assert format_milliseconds(0.0) == "1"
    assert format_milliseconds(0.0009) == "1"
    assert parse_milliseconds("0") is None


def test_the_written_header_is_what_a_server_honours() -> None:
    """A value this side writes is the budget the inbound side reads from the header."""
    header = {"x-envoy-expected-rq-timeout-ms": format_milliseconds(0.2509)}
    assert inbound_budget(header) == 0.25


def test_header_integers_are_plain_ascii_digits() -> None:
    """Signs, spaces, underscores, non-ASCII digits and overlong values are not numbers."""
    assert header_integer("0042", 4) == 42
    for value in ("", "+5", " 5", "5_0", "\u0663", "\uff11", "12345"):
        assert header_integer(value, 4) is None, value
