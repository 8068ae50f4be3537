"""The breaker/store seam: stores see a port, never the breaker's internals (no Redis needed)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import resilience._stores
from resilience import CircuitBreaker, CircuitOpenError, CircuitState
from resilience.stores import BreakerBinding, BreakerPort, BreakerStore
from resilience.testing import FakeClock

STORES = Path(resilience._stores.__file__).parent


class PortKeeper:
    """A store that binds nothing and keeps the port it was given."""

    def __init__(self) -> None:
        self.port: BreakerPort | None = None

    def bind(self, port: BreakerPort) -> BreakerBinding | None:
        self.port = port
        return None

    def close(self) -> None:
        """Nothing to release."""


def bound(breaker_store: PortKeeper) -> BreakerPort:
    assert breaker_store.port is not None
    return breaker_store.port


def test_a_store_gets_a_port_with_name_config_and_state(clock: FakeClock) -> None:
    """bind() receives the breaker's name, settings, state and window; nothing more is needed."""
    store = PortKeeper()
    breaker = CircuitBreaker("seam-port", store=store, window=20, clock=clock)
    assert isinstance(store, BreakerStore)
    port = bound(store)
    assert (port.name, port.config.window, port.state) == ("seam-port", 20, CircuitState.CLOSED)
    breaker.call(len, "x")
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    assert port.snapshot() == (2, 1, 0, 1)


def test_adopted_state_moves_the_breaker_without_sharing_it(clock: FakeClock) -> None:
    """adopt_state OPEN rejects for the remaining time the store says; CLOSED empties the window."""
    store = PortKeeper()
    breaker = CircuitBreaker("seam-state", store=store, clock=clock)
    port = bound(store)
    port.adopt_state(CircuitState.OPEN, 4.0, "fleet state")
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(len, "x")
    assert info.value.retry_after == pytest.approx(4.0)
    port.adopt_state(CircuitState.CLOSED, 0.0, "fleet state")
    assert breaker.metrics().calls == 0
    assert breaker.call(len, "ab") == 2


def test_adopted_counts_can_trip_the_breaker(clock: FakeClock) -> None:
    """The fleet's failures plus this process's decide: one local failure may be the last straw."""
    store = PortKeeper()
    breaker = CircuitBreaker(
        "seam-counts", store=store, failure_rate=0.5, minimum_calls=10, clock=clock
    )
    port = bound(store)
    port.adopt_counts((9, 4, 0, 0))
    assert breaker.state is CircuitState.CLOSED
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    assert breaker.state is CircuitState.OPEN


def test_judge_locally_gives_the_verdict_the_store_could_not(clock: FakeClock) -> None:
    """Finished probes are judged by the breaker itself when asked."""
    store = PortKeeper()
    breaker = CircuitBreaker(
        "seam-judge", store=store, consecutive_failures=1, open_duration=5, clock=clock
    )
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    clock.advance(5)
    breaker.record_success(breaker.acquire())  # no binding: judged at once
    assert breaker.state is CircuitState.CLOSED
    bound(store).judge_locally()  # nothing pending: no change
    assert breaker.state is CircuitState.CLOSED


def _modules(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.py"))


@pytest.mark.parametrize("module", _modules(STORES), ids=lambda path: path.name)
def test_store_modules_never_touch_the_breaker(module: Path) -> None:
    """No store module imports CircuitBreaker or reads a private name off a port or breaker."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert "CircuitBreaker" not in imported
    private_reads = [
        f"line {node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and "port" in ast.unparse(node.value).split(".")[-1]
        )
        or (isinstance(node, ast.Attribute) and node.attr.startswith("_store_"))
    ]
    assert private_reads == []
