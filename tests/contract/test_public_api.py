"""The public surface is exactly what API.md promises, and every public name is documented."""

from __future__ import annotations

import importlib
import inspect
import pickle
import traceback
from collections.abc import Iterator

import pytest

import resilience

PROMISED = {
    "BreakerConfig",
    "BreakerMetrics",
    "Bulkhead",
    "BulkheadFull",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "ConfigError",
    "DeadlineExceeded",
    "Fallback",
    "IdempotencyConflict",
    "Policy",
    "ResilienceError",
    "Retry",
    "RetryBudget",
    "Timeout",
    "__version__",
    "backoff",
    "breakers",
    "bulkhead",
    "deadline",
    "fallback",
    "remaining",
    "retry",
    "timeout",
}


def test_all_is_exactly_the_public_names() -> None:
    """resilience.__all__ lists exactly the promised names, sorted."""
    assert set(resilience.__all__) == PROMISED
    assert resilience.__all__ == sorted(resilience.__all__)


def test_every_public_name_imports_and_has_a_docstring_with_an_example() -> None:
    """Each public name resolves and carries a docstring with an example."""
    for name in resilience.__all__:
        if name == "__version__":
            continue
        obj = getattr(resilience, name)
        doc = inspect.getdoc(obj) or ""
        assert doc, f"{name} has no docstring"
        assert ">>>" in doc or "Example" in doc or "```" in doc, f"{name} has no example"


def test_error_hierarchy() -> None:
    """The errors have the bases API.md lists."""
    assert issubclass(resilience.CircuitOpenError, resilience.ResilienceError)
    assert issubclass(resilience.BulkheadFull, resilience.ResilienceError)
    assert issubclass(resilience.DeadlineExceeded, resilience.ResilienceError)
    assert issubclass(resilience.DeadlineExceeded, TimeoutError)
    assert issubclass(resilience.ConfigError, resilience.ResilienceError)
    assert issubclass(resilience.ConfigError, ValueError)
    assert issubclass(resilience.IdempotencyConflict, resilience.ResilienceError)


def test_errors_carry_their_data_and_pickle() -> None:
    """CircuitOpenError and BulkheadFull keep their attributes through pickling."""
    import pickle

    exc = pickle.loads(pickle.dumps(resilience.CircuitOpenError("p", 1.5)))
    assert (exc.breaker, exc.retry_after) == ("p", 1.5)
    full = pickle.loads(pickle.dumps(resilience.BulkheadFull("db")))
    assert full.name == "db"
    conflict = pickle.loads(pickle.dumps(resilience.IdempotencyConflict("k", 2.0)))
    assert (conflict.key, conflict.retry_after) == ("k", 2.0)


def test_public_submodules_import() -> None:
    """The audience-named submodules import."""
    for module in (
        "resilience.testing",
        "resilience.events",
        "resilience.httpx",
        "resilience.httpx2",
        "resilience.requests",
        "resilience.aiohttp",
        "resilience.stores",
        "resilience.idempotency",
        "resilience.integrations",
        "resilience.integrations.fastapi",
        "resilience.integrations.flask",
        "resilience.messaging",
        "resilience.integrations.aio_pika",
    ):
        importlib.import_module(module)


def test_setup_cfg_lists_every_package() -> None:
    """The wheel ships every subpackage: setup.cfg lists packages by hand (``find:`` cannot)."""
    import configparser
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    if not (root / "setup.cfg").exists() or not (root / "resilience").is_dir():
        pytest.skip("run against an installed wheel, not a checkout")
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    found = {
        ".".join(init.parent.relative_to(root).parts)
        for init in (root / "resilience").rglob("__init__.py")
        if "integrations" not in init.parent.relative_to(root).parts[1:]
    }
    assert found - listed == set(), "add these to [options] packages in setup.cfg"


def test_messaging_names_are_documented_with_examples() -> None:
    """Every class and function resilience.messaging exports has a docstring with an example."""
    import resilience.integrations.aio_pika
    import resilience.messaging

    for module in (resilience.messaging, resilience.integrations.aio_pika):
        for name in module.__all__:
            obj = getattr(module, name)
            if not callable(obj):
                continue  # header names and defaults: constants, described in the docs
            doc = inspect.getdoc(obj) or ""
            assert ">>>" in doc or "Example" in doc or "```" in doc, f"{name} has no example"


PUBLIC_MODULES = (
    "resilience",
    "resilience.backoff",
    "resilience.events",
    "resilience.httpx",
    "resilience.idempotency",
    "resilience.messaging",
    "resilience.stores",
    "resilience.testing",
)
# Public classes still without an example, owned by work in progress elsewhere.
NO_EXAMPLE_YET = {
    "resilience.backoff.Backoff",
    "resilience.backoff.Constant",
    "resilience.backoff.Exponential",
    "resilience.backoff.NoBackoff",
    "resilience.stores.BreakerBinding",
}


def _public_objects() -> Iterator[tuple[str, str, object]]:
    """(public module, name, object) of every class and function the public modules export."""
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                yield module_name, name, obj


def test_public_names_show_where_users_import_them() -> None:
    """Reprs and tracebacks say resilience.X, not a private module; pickle finds X there."""
    for module_name, name, obj in _public_objects():
        shown = obj.__module__
        where = f"{module_name}.{name} is shown as {shown}.{name}"
        assert shown in (module_name, "resilience"), where
        assert getattr(importlib.import_module(shown), name) is obj, where
        assert pickle.loads(pickle.dumps(obj)) is obj, where


def test_every_public_name_of_the_submodules_has_an_example() -> None:
    """Each public class and function of the public submodules has a docstring example."""
    missing = {
        f"{module_name}.{name}"
        for module_name, name, obj in _public_objects()
        if not any(mark in (inspect.getdoc(obj) or "") for mark in (">>>", "```"))
    }
    assert missing - NO_EXAMPLE_YET == set()
    assert missing >= NO_EXAMPLE_YET, "an example was added: remove it from NO_EXAMPLE_YET"


def test_a_traceback_names_the_public_error() -> None:
    """A bad setting's traceback line reads resilience.ConfigError, as users import it."""
    with pytest.raises(resilience.ConfigError) as caught:
        resilience.CircuitBreaker("api-names", failure_rate=1.5)
    line = traceback.format_exception_only(caught.value)[-1]
    assert line.startswith("resilience.ConfigError: failure_rate must be in (0, 1]")
    assert repr(resilience.CircuitBreaker) == "<class 'resilience.CircuitBreaker'>"


def test_values_users_are_handed_pickle() -> None:
    """Settings, snapshots, states and events survive pickling (to another process, a cache)."""
    from resilience import events

    breaker = resilience.CircuitBreaker("api-pickle", failure_rate=0.25)
    event = events.CircuitStateChanged(breaker="b", old_state="closed", new_state="open")
    for value in (breaker.config, breaker.metrics(), resilience.CircuitState.OPEN, event):
        assert pickle.loads(pickle.dumps(value)) == value
