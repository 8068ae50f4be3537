"""A fake clock for tests: time moves only when the test says so."""

from __future__ import annotations

from datetime import timedelta

from ._public import public
from ._validate import required_duration


class FakeClock:
    """A callable monotonic clock that only moves when told to.

    Pass it as ``clock=`` to any component; call `advance` to let time pass. It starts at an
    arbitrary large value, as `time.monotonic` does, so code must not assume it starts at 0.

    Example:
        >>> from resilience.testing import FakeClock
        >>> clock = FakeClock()
        >>> start = clock()
        >>> clock.advance(2.5)
        >>> clock() - start
        2.5
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = 1_000.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float | timedelta) -> None:
        """Move the clock forward by *seconds* (a float or a `timedelta`, >= 0)."""
        self._now += required_duration("seconds", seconds, allow_zero=True)

    def sleep(self, seconds: float) -> None:
        """A `time.sleep` stand-in that advances the clock instead of blocking."""
        if seconds > 0:
            self._now += seconds

    async def asleep(self, seconds: float) -> None:
        """An `asyncio.sleep` stand-in that advances the clock instead of waiting."""
        if seconds > 0:
            self._now += seconds

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"


public("resilience.testing", FakeClock)
