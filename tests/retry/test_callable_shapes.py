"""Callable settings of the wrong shape fail when the Retry is built, not at the first retry."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import tenacity

from resilience import ConfigError, Retry, backoff


def test_backoff_taking_two_arguments_is_refused_at_construction() -> None:
    """A backoff lambda of (attempt, error) is named with its signature and the fix."""
    with pytest.raises(ConfigError) as caught:
        Retry(on=OSError, backoff=lambda attempt, error: 0.5)  # type: ignore[arg-type,misc]
    message = str(caught.value)
    assert message.startswith("backoff must take 1 argument (a tenacity RetryCallState)")
    assert "(attempt, error)" in message
    assert "backoff.exponential(...)" in message


def test_backoff_taking_no_argument_is_refused() -> None:
    """A backoff that takes nothing cannot be a tenacity wait either."""
    with pytest.raises(ConfigError, match=r"^backoff must take 1 argument .* taking \(\)"):
        Retry(on=OSError, backoff=lambda: 0.5)  # type: ignore[arg-type,misc]


def test_backoff_annotated_with_an_attempt_number_is_refused() -> None:
    """A function declaring an int parameter expects the attempt, not a RetryCallState."""

    def per_attempt(attempt: int) -> float:
        return 0.25 * attempt

    with pytest.raises(ConfigError, match="annotated as a number"):
        Retry(on=OSError, backoff=per_attempt)


@pytest.mark.parametrize(
    "wait",
    [
        tenacity.wait_fixed(1),
        tenacity.wait_chain(tenacity.wait_fixed(1), tenacity.wait_fixed(2)),
        tenacity.wait_fixed(1) + tenacity.wait_random(0, 1),
        lambda state: 1.0,
        functools.partial(lambda base, state: base, 1.0),
    ],
    ids=["wait_fixed", "wait_chain", "sum", "lambda", "partial"],
)
def test_tenacity_waits_of_one_argument_are_accepted(wait: Any) -> None:
    """Every tenacity wait shape (objects, combinations, plain functions) still builds."""
    assert Retry(on=OSError, backoff=wait).compute_wait(1) >= 0.0


def test_backoff_module_refuses_the_same_shapes() -> None:
    """backoff.as_backoff, used by every component taking a backoff, checks the shape too."""
    with pytest.raises(ConfigError, match=r"^backoff must take 1 argument"):
        backoff.as_backoff(lambda a, b, c: 0.0)


def test_on_predicate_without_argument_is_refused() -> None:
    """on=lambda: True would raise TypeError at the first failure; it fails now instead."""
    with pytest.raises(ConfigError) as caught:
        Retry(on=lambda: True)  # type: ignore[arg-type,misc]
    assert str(caught.value).startswith("on must take 1 argument (the exception), got ")
    assert "lambda exc:" in str(caught.value)


def test_on_result_predicate_with_two_arguments_is_refused() -> None:
    """on_result receives the result only."""
    with pytest.raises(ConfigError, match=r"^on_result must take 1 argument \(the result\)"):
        Retry(on=OSError, on_result=lambda result, attempt: True)  # type: ignore[arg-type,misc]


def test_sleep_of_the_wrong_shape_is_refused() -> None:
    """sleep and asleep receive the seconds to wait."""
    with pytest.raises(ConfigError, match=r"^sleep must take 1 argument"):
        Retry(on=OSError, sleep=lambda: None)  # type: ignore[arg-type,misc]
    with pytest.raises(ConfigError, match=r"^asleep must take 1 argument"):
        Retry(on=OSError, asleep=lambda a, b: None)  # type: ignore[arg-type,misc]


@pytest.mark.parametrize(
    "predicate",
    [
        lambda exc: True,
        lambda *args: True,
        lambda exc, extra=None: True,
        callable,  # a builtin with a signature
        functools.partial(lambda kinds, exc: isinstance(exc, kinds), OSError),
    ],
    ids=["one", "varargs", "defaulted", "builtin", "partial"],
)
def test_predicates_callable_with_one_argument_are_accepted(predicate: Any) -> None:
    """Any callable that can take the exception is fine, whatever else it accepts."""
    assert Retry(on=predicate, on_result=predicate) is not None


def test_callables_without_a_readable_signature_are_trusted() -> None:
    """A builtin type with no signature (bool as on_result) is accepted as before."""
    assert Retry(on=OSError, on_result=bool).on_result is bool
