"""Start-up cost: a fresh interpreter that imports a library and builds one object.

``import resilience; resilience.CircuitBreaker("x")`` against a bare interpreter
(``python -c pass``) and the peers doing the same; and our httpx transport against importing
httpx alone. Each figure is the median wall time of fresh subprocesses, taken in turns
(shuffled every round) so that load from elsewhere on the machine lands on every contender
alike. Our rows' notes hold the ratio to the bare interpreter: a command-line tool or a
serverless function pays it on every start. The target for the breaker is at most 4x.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

from ._harness import Case, Contender, Role, Row, Settings, failed_row, median

TITLE = "start-up: a fresh interpreter imports the library and builds one object"
UNIT = "ms"
ROOT = Path(__file__).resolve().parent.parent  # -c puts the working directory first: ours

BREAKER_VARIANT = "circuit breaker"
HTTPX_VARIANT = "httpx transport"

Snippet = tuple[str, Role, str, str]
"""(library, role, code, note)."""

SNIPPETS: dict[str, list[Snippet]] = {
    BREAKER_VARIANT: [
        ("python -c pass", "baseline", "pass", "a bare interpreter"),
        ("resilience", "us", "import resilience; resilience.CircuitBreaker('x')", ""),
        ("pybreaker", "peer", "import pybreaker; pybreaker.CircuitBreaker()", ""),
        ("circuitbreaker", "peer", "import circuitbreaker; circuitbreaker.CircuitBreaker()", ""),
        ("aiobreaker", "peer", "import aiobreaker; aiobreaker.CircuitBreaker()", ""),
        (
            "purgatory",
            "peer",
            "import purgatory; purgatory.SyncCircuitBreakerFactory().get_breaker('x')",
            "",
        ),
    ],
    HTTPX_VARIANT: [
        ("httpx (bare)", "baseline", "import httpx; httpx.HTTPTransport()", "httpx alone"),
        (
            "resilience",
            "us",
            "from resilience.httpx import ResilientTransport; ResilientTransport()",
            "",
        ),
        (
            "httpx-retries",
            "peer",
            "import httpx_retries; httpx_retries.RetryTransport()",
            "",
        ),
    ],
}


def start_ms(code: str) -> float:
    """Milliseconds for a fresh interpreter to run *code* and exit."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, timeout=60
    )
    return (time.perf_counter() - started) * 1000


def measure_starts(variant: str, snippets: list[Snippet], runs: int, seed: int) -> list[Row]:
    """Median start-up time of each snippet over *runs* turns; our note gives the ratio."""
    samples: dict[str, list[float]] = {library: [] for library, *_ in snippets}
    failed: dict[str, Row] = {}
    rng = random.Random(seed)
    for _ in range(runs):
        order = [snippet for snippet in snippets if snippet[0] not in failed]
        rng.shuffle(order)
        for library, role, code, _note in order:
            try:
                samples[library].append(start_ms(code))
            except (OSError, subprocess.SubprocessError) as exc:
                contender = Contender(library, role, lambda: None)
                failed[library] = failed_row(TITLE, variant, contender, UNIT, "lower", exc)
    base = next((library for library, role, *_ in snippets if role == "baseline"), None)
    baseline = median(samples[base]) if base is not None and base not in failed else None
    rows = []
    for library, role, _code, note in snippets:
        if library in failed:
            rows.append(failed[library])
            continue
        value = median(samples[library])
        if role == "us" and baseline:
            note = f"{value / baseline:.2f}x {base}" + (
                " (target <= 4x)" if variant == BREAKER_VARIANT else ""
            )
        rows.append(
            Row(
                case=TITLE,
                variant=variant,
                library=library,
                role=role,
                value=value,
                unit=UNIT,
                better="lower",
                note=note,
            )
        )
    return rows


def run(settings: Settings) -> list[Row]:
    """Both variants: 15 turns each (5 in quick mode)."""
    runs = settings.scale(15, 5)
    return [
        row
        for variant, snippets in SNIPPETS.items()
        for row in measure_starts(variant, snippets, runs, settings.seed)
    ]


CASES = [Case("import", TITLE, run)]
