"""Per-request overrides: ``request.extensions["resilience"]``, validated once per request.

Keys: ``retry`` (False or None: send once; or a `Retry` replacing the transport's),
``attempts`` (total attempts, the first included) and ``idempotent`` (True or False: overrides
the method rules). Any client whose requests carry a per-request dict can hand it to
`parse_overrides`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from .. import _validate
from .._errors import ConfigError
from .._retry._retry import Retry

__all__ = ["EXTENSION", "Overrides", "parse_overrides"]

EXTENSION: Final = "resilience"
"""The `request.extensions` key for per-request overrides."""


class Overrides:
    """Per-request settings read from ``request.extensions["resilience"]``.

    Keys: ``retry`` (False or None: send once; or a `Retry` replacing the transport's),
    ``attempts`` (total attempts, the first included), ``idempotent`` (True or False:
    overrides the method rules, e.g. for a POST the server deduplicates).

    Example:
        >>> parse_overrides({"attempts": 5}).attempts
        5
    """

    __slots__ = ("attempts", "idempotent", "no_retry", "retry")

    def __init__(
        self,
        *,
        retry: Retry | None = None,
        no_retry: bool = False,
        attempts: int | None = None,
        idempotent: bool | None = None,
    ) -> None:
        self.retry = retry
        self.no_retry = no_retry
        self.attempts = attempts
        self.idempotent = idempotent

    def __repr__(self) -> str:
        return (
            f"Overrides(retry={self.retry!r}, no_retry={self.no_retry!r}, "
            f"attempts={self.attempts!r}, idempotent={self.idempotent!r})"
        )


_OVERRIDE_KEYS: Final = frozenset({"retry", "attempts", "idempotent"})


def parse_overrides(value: object) -> Overrides:
    """Validate ``request.extensions["resilience"]``; raise `ConfigError` when malformed."""
    if isinstance(value, Overrides):
        return value
    if not isinstance(value, Mapping):
        msg = (
            'request.extensions["resilience"] must be a dict with keys '
            f"{sorted(_OVERRIDE_KEYS)}, got {value!r}"
        )
        raise ConfigError(msg)
    unknown = set(value) - _OVERRIDE_KEYS
    if unknown:
        msg = (
            f'request.extensions["resilience"] has unknown keys {sorted(unknown)!r}; '
            f"known keys are {sorted(_OVERRIDE_KEYS)}"
        )
        raise ConfigError(msg)
    retry: Retry | None = None
    no_retry = False
    if "retry" in value:
        given = value["retry"]
        if given is None or given is False:
            no_retry = True
        elif isinstance(given, Retry):
            retry = given
        else:
            msg = (
                f'request.extensions["resilience"]["retry"] must be False or a Retry, got {given!r}'
            )
            raise ConfigError(msg)
    attempts = _validate.integer(
        'request.extensions["resilience"]["attempts"]', value.get("attempts"), allow_none=True
    )
    idempotent = value.get("idempotent")
    if idempotent is not None and not isinstance(idempotent, bool):
        msg = f'request.extensions["resilience"]["idempotent"] must be a bool, got {idempotent!r}'
        raise ConfigError(msg)
    return Overrides(retry=retry, no_retry=no_retry, attempts=attempts, idempotent=idempotent)
