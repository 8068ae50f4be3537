"""BreakerConfig: validated once, frozen, derived settings, shared between breakers."""

from __future__ import annotations

import dataclasses
import math

import pytest

from resilience import CircuitBreaker
from resilience._breaker._config import BreakerConfig


def test_equal_settings_share_one_config() -> None:
    """Breakers built alike hold one config object, not one each."""
    first = CircuitBreaker("cfg-a", window=50, open_duration=5)
    second = CircuitBreaker("cfg-b", window=50, open_duration=5.0)
    other = CircuitBreaker("cfg-c", window=51, open_duration=5)
    assert first.config is second.config
    assert other.config is not first.config


def test_an_explicit_default_rate_is_not_the_default() -> None:
    """failure_rate=0.5 given with consecutive_failures makes both trip; left out it does not."""
    given = CircuitBreaker("cfg-rate-a", consecutive_failures=3, failure_rate=0.5).config
    left_out = CircuitBreaker("cfg-rate-b", consecutive_failures=3).config
    assert given is not left_out
    assert (given.rate_trips, left_out.rate_trips) == (True, False)


def test_derived_settings() -> None:
    """decisive_calls, slow_threshold and is_failure follow from the settings."""
    config = CircuitBreaker("cfg-derived", window=5, minimum_calls=10, failure_on=KeyError).config
    assert config.decisive_calls == 5  # a count window never holds more than 5 calls
    assert config.slow_threshold == math.inf
    assert not config.timed
    assert config.is_failure(KeyError())
    assert not config.is_failure(ValueError())
    timed = CircuitBreaker("cfg-timed", window_seconds=60, minimum_calls=10, slow_call_duration=2)
    assert (timed.config.decisive_calls, timed.config.slow_threshold) == (10, 2.0)


def test_an_unhashable_predicate_is_not_shared() -> None:
    """A failure_on that cannot be hashed still works; its config is simply not shared."""

    class Predicate:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self, exc: BaseException) -> bool:
            return True

    config = CircuitBreaker("cfg-unhashable", failure_on=Predicate()).config
    assert config.is_failure(ValueError())


def test_config_is_frozen() -> None:
    """Settings never change after construction."""
    config = CircuitBreaker("cfg-frozen").config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.window = 3  # type: ignore[misc]
    assert isinstance(config, BreakerConfig)
