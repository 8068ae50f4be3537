"""Observability: the events, and the sinks they go to (the log, OpenTelemetry).

- `_events`: the event types, the listeners, and `emit`, which imports no sink.
- `_log`: the log sink (structlog when the application configured it, else the stdlib).
- `_otel_gate`: the OpenTelemetry sink and HTTP spans, loading `_otel` (span events,
  counters, gauges) and `_otel_http` (CLIENT spans) only once OpenTelemetry is in use.
- `_gauges`: the seam the breaker registry feeds, so observability never imports breakers;
  `_labels`: metric label names and their caps; `_redact`: no credentials anywhere.

Importing this package registers the sinks with `emit`.
"""

from __future__ import annotations

from . import _events, _gauges
from ._log import LOG_SINK
from ._otel_gate import OTEL_SINK

_events.add_sink(LOG_SINK)
_events.add_sink(OTEL_SINK)
# A breaker built while OpenTelemetry is in use starts the gauges that report it.
_gauges.on_breaker_added(OTEL_SINK.start)
