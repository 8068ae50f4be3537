"""Start-up stays cheap: building a breaker loads none of the heavy dependencies.

structlog (about 50 ms with asyncio), opentelemetry-api (about 25 ms) and httpx (ssl) are
loaded only when they are used: structlog never by us (only an application that configured
it, and so imported it, gets events there), OpenTelemetry once the application imported it.
Behaviour, not timing: `python -m bench --only import` measures the time.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

HEAVY = ("structlog", "opentelemetry", "httpx", "asyncio")


def _loaded_after(code: str) -> list[str]:
    """The heavy top-level packages a fresh interpreter has loaded after running *code*."""
    script = textwrap.dedent(code) + textwrap.dedent(
        f"""
        import sys
        print(sorted({{name.partition(".")[0] for name in sys.modules}} & set({HEAVY!r})))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return eval(done.stdout)  # type: ignore[no-any-return]  # a list literal we printed


def test_building_a_breaker_loads_no_heavy_dependency() -> None:
    """Importing resilience and building a breaker imports no structlog, OTel, httpx, asyncio."""
    assert _loaded_after("import resilience; resilience.CircuitBreaker('x')") == []


def test_events_and_logs_load_no_heavy_dependency() -> None:
    """Trips, rejections and their stdlib log lines need neither structlog nor OpenTelemetry."""
    code = """
        import logging
        import resilience
        from resilience import events

        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger("resilience").addHandler(handler)
        logging.getLogger("resilience").setLevel(logging.DEBUG)
        seen = []
        events.add_listener(seen.append)
        breaker = resilience.CircuitBreaker("x", consecutive_failures=1)
        try:
            breaker.call(lambda: 1 / 0)
        except ZeroDivisionError:
            pass
        try:
            breaker.call(lambda: None)
        except resilience.CircuitOpenError:
            pass
        assert [e.event for e in seen] == [
            "circuit_breaker.state_changed",
            "circuit_breaker.call_rejected",
        ], seen
        assert len(records) == 2, records
    """
    assert _loaded_after(code) == []


def test_opentelemetry_is_used_once_the_application_imports_it() -> None:
    """With OpenTelemetry imported first, our sink loads and events reach the current span."""
    code = """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import resilience

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        with provider.get_tracer("app").start_as_current_span("handler"):
            resilience.CircuitBreaker("x").force_open()
        (span,) = exporter.get_finished_spans()
        assert [e.name for e in span.events] == ["resilience.circuit_breaker.state_changed"]
    """
    assert "structlog" not in _loaded_after(code)
