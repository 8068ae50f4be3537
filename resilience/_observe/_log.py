"""The log sink: every event as one log line, to structlog or to the stdlib logger.

The library never configures logging. When the application configured structlog, events
go there under their event name with their fields as keys; otherwise they go to the stdlib
logger ``resilience``, which has a `logging.NullHandler` and so prints nothing until the
application sets logging up. structlog is never imported by us (see
`resilience._observe._events.configured_structlog`).
"""

from __future__ import annotations

import logging
import sys
from typing import Final

from ._events import LOGGER_NAME, Event, configured_structlog, stdlib_logger

__all__ = ["LOG_SINK", "LogSink"]

# `logging.Logger.isEnabledFor`'s cache (a dict since Python 3.7); an empty dict if a future
# logging drops it, and then every question goes to `isEnabledFor`.
_enabled_cache: dict[int, bool] = getattr(stdlib_logger, "_cache", {})
_modules: Final = sys.modules

_METHODS: Final = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}


class LogSink:
    """Sends each event to structlog when configured, else to the stdlib logger ``resilience``.

    Example:
        >>> import logging
        >>> LOG_SINK.wants(logging.DEBUG)  # no structlog, and the stdlib logger is quiet
        False
    """

    __slots__ = ()

    name: Final = "log"

    def wants(self, level: int) -> bool:
        """Whether an event at *level* would be logged now."""
        # Asked on every call an open breaker rejects, so no frame more than needed:
        # `configured_structlog` inlined, and the stdlib logger's own answer cache read
        # first (logging clears it whenever a level changes, so a hit is exact).
        structlog = _modules.get("structlog")
        if structlog is not None and structlog.is_configured():
            return True
        enabled = _enabled_cache.get(level)
        return stdlib_logger.isEnabledFor(level) if enabled is None else enabled

    def send(self, event: Event) -> None:
        """Log *event* under its name, with its fields as keys."""
        structlog = configured_structlog()
        if structlog is not None:
            # The level's own method: every structlog wrapper class has it, not all have log().
            logger = structlog.get_logger(LOGGER_NAME)
            getattr(logger, _METHODS.get(event.level, "info"))(event.event, **event.log_fields())
        elif stdlib_logger.isEnabledFor(event.level):
            data = event.log_fields()
            stdlib_logger.log(
                event.level,
                "%s %s",
                event.event,
                " ".join(f"{k}={v!r}" for k, v in data.items()),
                extra={"resilience_event": event.event, "resilience": data},
            )


LOG_SINK: Final = LogSink()
"""The one log sink, registered with `resilience._observe._events.emit` by the package."""
