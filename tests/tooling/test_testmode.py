"""Test mode: zero waits and capped attempts for users' tests, and the pytest fixtures."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from resilience import ConfigError, Retry, backoff, retry
from resilience import _testmode as testmode
from resilience.testing import FakeClock, is_testing, set_testing

SLOW = backoff.constant(30.0)


@pytest.fixture(autouse=True)
def _test_mode_is_off_around_each_test() -> Iterator[None]:
    """Every test starts and ends with test mode off."""
    assert not is_testing()
    yield
    set_testing(False)


def _no_real_sleep(seconds: float) -> None:
    raise AssertionError(f"slept {seconds} s in test mode")


def run(policy: Retry, fail_times: int) -> int:
    """Call a function failing *fail_times* times through *policy*; return the attempts made."""
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= fail_times:
            raise ConnectionError
        return "ok"

    try:
        policy.call(fn)
    except ConnectionError:
        pass
    return len(calls)


def test_test_mode_removes_every_wait() -> None:
    """With test mode on and no attempts given, retries keep their attempts but never sleep."""
    policy = Retry(on=ConnectionError, attempts=5, backoff=SLOW, sleep=_no_real_sleep)
    with set_testing(True):
        assert run(policy, fail_times=10) == 5
        assert policy.compute_wait(3) == 0.0


def test_attempts_are_capped() -> None:
    """attempts=N with cap=True: no retry makes more than N attempts, fewer stay fewer."""
    five = Retry(on=ConnectionError, attempts=5, backoff=SLOW, sleep=_no_real_sleep)
    one = Retry(on=ConnectionError, attempts=1)
    with set_testing(True, attempts=2):
        assert run(five, fail_times=10) == 2
        assert run(one, fail_times=10) == 1
        assert (five.max_attempts(), one.max_attempts()) == (2, 1)
        assert five.attempts == 5  # the configured value is untouched


def test_attempts_without_cap_are_exact() -> None:
    """attempts=N with cap=False: every retry makes exactly N attempts."""
    two = Retry(on=ConnectionError, attempts=2, backoff=SLOW, sleep=_no_real_sleep)
    with set_testing(True, attempts=4, cap=False):
        assert run(two, fail_times=10) == 4


def test_attempts_one_turns_retries_off() -> None:
    """attempts=1 makes every retried call fail at the first error."""
    policy = Retry(on=ConnectionError, attempts=5)
    with set_testing(True, attempts=1):
        assert run(policy, fail_times=1) == 1


def test_with_block_restores_the_previous_mode() -> None:
    """Leaving the with block brings back what was set before, even when nested."""
    with set_testing(True, attempts=3):
        with set_testing(True, attempts=1):
            assert testmode.max_attempts(5) == 1
        assert testmode.max_attempts(5) == 3
        with set_testing(False):
            assert not is_testing()
        assert is_testing()
    assert not is_testing()


def test_a_plain_call_stays_in_effect() -> None:
    """set_testing without with changes the mode until it is switched off."""
    set_testing(True, attempts=2)
    assert is_testing()
    assert testmode.max_attempts(9) == 2
    set_testing(False)
    assert not is_testing()
    assert testmode.max_attempts(9) == 9


def test_mode_is_process_wide() -> None:
    """Another thread sees the test mode set by the test."""
    seen: list[bool] = []
    with set_testing(True):
        thread = threading.Thread(target=lambda: seen.append(is_testing()))
        thread.start()
        thread.join()
    assert seen == [True]


def test_helpers_for_transports() -> None:
    """wait() and max_attempts() give transports the same answers as Retry."""
    assert (testmode.wait(2.5), testmode.max_attempts(3)) == (2.5, 3)
    with set_testing(True, attempts=2):
        assert (testmode.wait(2.5), testmode.max_attempts(3)) == (0.0, 2)
        assert testmode.settings() is not None


def test_bad_attempts_raise_config_error() -> None:
    """attempts must be a positive integer."""
    with pytest.raises(ConfigError, match="attempts"):
        set_testing(True, attempts=0)
    assert not is_testing()


def test_retries_outside_test_mode_still_wait() -> None:
    """Without test mode, the backoff is used again."""
    waits: list[float] = []
    policy = retry(
        on=ConnectionError, attempts=2, backoff=backoff.constant(0.5), sleep=waits.append
    )
    assert run(policy, fail_times=1) == 2
    assert waits == [0.5]


def test_no_waits_fixture_turns_test_mode_on(no_waits: None) -> None:
    """The plugin's no_waits fixture switches test mode on for the test."""
    assert is_testing()
    policy = Retry(on=ConnectionError, attempts=3, backoff=SLOW, sleep=_no_real_sleep)
    assert run(policy, fail_times=10) == 3


def test_fake_clock_fixture_is_a_fake_clock(fake_clock: FakeClock) -> None:
    """The plugin's fake_clock fixture is a FakeClock that moves only when told."""
    start = fake_clock()
    fake_clock.advance(1.5)
    assert fake_clock() - start == 1.5
