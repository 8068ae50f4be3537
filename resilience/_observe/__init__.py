"""Observability: events, listeners and sinks (logs, OpenTelemetry), redaction."""
