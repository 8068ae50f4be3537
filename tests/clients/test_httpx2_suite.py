"""The httpx transports' behaviour suites, run a second time with httpx2 and resilience.httpx2.

httpx2 is httpx under another import name, and `resilience.httpx2`'s transports are the
same class bodies as `resilience.httpx`'s. So rather than keep a second copy of every
behaviour test, each suite below is loaded again with ``import httpx`` read as
``import httpx2 as httpx`` and ``resilience.httpx`` as ``resilience.httpx2``: the same
tests, the same assertions, the other library. A new test in those files runs for both.

Left out: suites that test private helpers with httpx objects (`test_transport_rules.py`,
whose functions default to httpx's error kinds), that mock with respx (it patches httpx
only), and the breaker-settings simulation (no HTTP library involved).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

pytest.importorskip("httpx2")

HTTP_TESTS = Path(__file__).resolve().parents[1] / "http"
SUITES = (
    "test_transport_behaviour.py",
    "test_transport_decision.py",
    "test_transport_deadline_breaker.py",
    "test_transport_drip.py",
    "test_transport_faults.py",
    "test_httpx_server.py",
)
SWAPS = (
    ("\nimport httpx\n", "\nimport httpx2 as httpx\n"),
    ("from resilience.httpx import", "from resilience.httpx2 import"),
    ('"resilience.httpx: ', '"resilience.httpx2: '),
)


def _load(name: str) -> types.ModuleType:
    """The suite *name*, with httpx swapped for httpx2, as a module of its own."""
    path = HTTP_TESTS / name
    source = path.read_text()
    for old, new in SWAPS:
        assert old in source or old.startswith('"'), f"{name} no longer has {old!r}"
        source = source.replace(old, new)
    module = types.ModuleType(f"tests.clients.httpx2_{path.stem}", source)
    module.__file__ = str(path)
    sys.modules[module.__name__] = module
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


for _suite in SUITES:
    _module = _load(_suite)
    _prefix = _suite.removeprefix("test_").removesuffix(".py")
    for _name, _value in vars(_module).items():
        if _name.startswith("test_"):
            # Collected here under a name that says which suite it came from.
            globals()[f"test_{_prefix}__{_name.removeprefix('test_')}"] = _value
        elif not _name.startswith("__") and _name not in globals():
            # Fixtures and marks the tests use (pytestmark is merged by hand below).
            globals()[_name] = _value

pytestmark = [pytest.mark.network]
