"""Breaker defaults from a simulation: how often a breaker rejects calls to a host that fails
at random, how fast it cuts a host that fails every call.

A real `CircuitBreaker` on a `FakeClock` meets an upstream that fails a share *p* of calls at
random (seeded), calls arriving at a fixed rate (the clock moves 1/rate per call). Every call
draws its fate, rejected or not, so every candidate meets the same sequence of fates
(common random numbers: the candidates differ by their settings, not by their luck).

For each candidate it reports, worst case over several seeds:

- the share of calls rejected at each *p*: at 30-35 % random failures a breaker should reject
  (next to) nothing, since such a host still answers two calls in three;
- the calls until the first opening at p=1.0 (a dead host should be cut within 20 calls);
- whether, and how fast, it opens at p=0.6.

``python -m bench --only defaults`` prints the rows; ``python -m bench.case_defaults`` prints
the markdown table of docs/choosing-settings.md. The test suite imports `simulate` and
`evaluate` (tests/http/test_defaults_simulation.py).
"""

from __future__ import annotations

import random
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from resilience._http._hosts import DEFAULT_HOST_BREAKER

from ._harness import Case, Role, Row, Settings

RATES: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8, 1.0)
"""The failure shares of the upstream that every candidate meets."""
CALLS = 1_000
"""Calls per run."""
PER_SECOND = 10.0
"""Calls per second: the fake clock moves 1/PER_SECOND before each call."""
SEED = 20261129
"""The first seed; run *k* uses SEED + k."""
SEEDS_FULL = 20
SEEDS_QUICK = 5


@dataclass(frozen=True, slots=True)
class Candidate:
    """A set of `CircuitBreaker` keyword arguments under a short label."""

    label: str
    settings: Mapping[str, Any]
    role: Role = "peer"
    note: str = ""

    def describe(self) -> str:
        """The settings as ``key=value`` pairs, in a stable order."""
        return ", ".join(f"{key}={value}" for key, value in self.settings.items())


@dataclass(frozen=True, slots=True)
class Run:
    """What one run of `simulate` saw."""

    calls: int
    rejected: int
    openings: int
    first_opening: int | None
    """Calls made until the breaker first opened (the call that opened it included)."""
    rejected_after_outage: int
    """Rejections among the calls after the outage (all of them without an outage)."""

    @property
    def rejected_share(self) -> float:
        """Rejected calls / calls."""
        return self.rejected / self.calls


def simulate(
    settings: Mapping[str, Any],
    *,
    failing: float,
    seed: int,
    calls: int = CALLS,
    per_second: float = PER_SECOND,
    down_for: int = 0,
) -> Run:
    """Drive a breaker built with *settings* against an upstream failing *failing* of calls.

    The first *down_for* calls fail whatever their fate (an outage); the clock moves
    ``1 / per_second`` before each call.

    Example:
        >>> run = simulate({"consecutive_failures": 5}, failing=1.0, seed=1, calls=50)
        >>> run.first_opening, run.rejected
        (5, 45)
    """
    # Imported here so that `python -m bench --list` works before resilience is importable.
    from resilience import CircuitBreaker, CircuitOpenError
    from resilience.testing import FakeClock

    clock = FakeClock()
    breaker = CircuitBreaker("bench-defaults", clock=clock, **settings)
    openings: list[int] = []
    made = 0

    def listen(event: object) -> None:
        if getattr(event, "new_state", None) == "open":
            openings.append(made)

    breaker.add_listener(listen)
    fates = random.Random(seed)
    step = 1.0 / per_second
    rejected = rejected_after = 0
    for _ in range(calls):
        clock.advance(step)
        # Drawn for every call, rejected or not: every candidate meets the same fates.
        fails = fates.random() < failing or made < down_for
        made += 1
        try:
            permit = breaker.acquire()
        except CircuitOpenError:
            rejected += 1
            rejected_after += made > down_for
            continue
        if fails:
            breaker.record_failure(permit)
        else:
            breaker.record_success(permit)
    first = openings[0] if openings else None
    return Run(calls, rejected, len(openings), first, rejected_after)


OUTAGE = 300
"""Calls of the outage scenario during which the host fails every call (30 s at 10/s)."""
AFTER_OUTAGE = 0.1
"""Share of calls failing at random once the outage is over."""


@dataclass(frozen=True, slots=True)
class Summary:
    """A candidate's worst case over the seeds, at every failure share."""

    candidate: Candidate
    seeds: int
    worst_rejected: dict[float, float] = field(default_factory=dict)
    """Failure share -> the largest share of calls rejected in any seed."""
    fewest_rejected: dict[float, float] = field(default_factory=dict)
    """Failure share -> the smallest share of calls rejected in any seed."""
    opened_in: dict[float, int] = field(default_factory=dict)
    """Failure share -> in how many seeds the breaker opened at least once."""
    slowest_opening: dict[float, int | None] = field(default_factory=dict)
    """Failure share -> most calls until the first opening (None: some seed never opened)."""
    recovery: float | None = None
    """Mean share of the calls after the outage that were rejected (None: not run).

    A mean, not a worst case: one unlucky probe costs a whole ``open_duration`` in any
    setting, and how often that happens is what tells settings apart."""

    def opens_always(self, failing: float) -> bool:
        """True when the breaker opened in every seed at *failing*."""
        return self.opened_in[failing] == self.seeds


def evaluate(
    candidate: Candidate,
    *,
    seeds: int = SEEDS_FULL,
    first_seed: int = SEED,
    rates: Sequence[float] = RATES,
    calls: int = CALLS,
    outage: bool = True,
) -> Summary:
    """Simulate *candidate* at every rate (and the outage) with *seeds* seeds; keep the worst.

    Example:
        >>> s = evaluate(Candidate("c", {"consecutive_failures": 5}), seeds=2, rates=(1.0,))
        >>> s.slowest_opening[1.0], s.opens_always(1.0)
        (5, True)
    """
    worst: dict[float, float] = {}
    fewest: dict[float, float] = {}
    opened: dict[float, int] = {}
    slowest: dict[float, int | None] = {}
    for failing in rates:
        runs = [
            simulate(candidate.settings, failing=failing, seed=first_seed + k, calls=calls)
            for k in range(seeds)
        ]
        worst[failing] = max(r.rejected_share for r in runs)
        fewest[failing] = min(r.rejected_share for r in runs)
        firsts = [r.first_opening for r in runs if r.first_opening is not None]
        opened[failing] = len(firsts)
        slowest[failing] = max(firsts) if len(firsts) == seeds else None
    recovery = None
    if outage:
        after = calls - OUTAGE
        recovery = statistics.fmean(
            simulate(
                candidate.settings,
                failing=AFTER_OUTAGE,
                seed=first_seed + k,
                calls=calls,
                down_for=OUTAGE,
            ).rejected_after_outage
            / after
            for k in range(seeds)
        )
    return Summary(candidate, seeds, worst, fewest, opened, slowest, recovery)


# ---------------------------------------------------------------------------------------------
# The candidates


WAVE_ONE: Mapping[str, Any] = {
    "window": 100,
    "minimum_calls": 10,
    "failure_rate": 0.5,
    "half_open_calls": 1,
    "open_duration": 30.0,
}
"""`CircuitBreaker`'s own defaults: the transports' per-host breaker until the simulation."""


RESILIENCE4J: Mapping[str, Any] = {
    "window": 100,
    "minimum_calls": 100,
    "failure_rate": 0.5,
    "half_open_calls": 10,
    "open_duration": 60.0,
}
"""resilience4j's defaults (a count window of 100 calls, judged from the 100th call on)."""

QUICKER: Mapping[str, Any] = {
    "window": 100,
    "minimum_calls": 50,
    "failure_rate": 0.5,
    "consecutive_failures": 8,
    "half_open_calls": 1,
    "open_duration": 30.0,
}
"""Both triggers, tuned to detect sooner: shows what faster detection costs."""


def candidates() -> list[Candidate]:
    """The transports' default per-host breaker, what it replaced, and alternatives.

    Two alternatives move one knob of the default, so the table shows what that knob buys.
    """
    chosen = dict(DEFAULT_HOST_BREAKER)
    return [
        Candidate("CircuitBreaker defaults", WAVE_ONE, "baseline", "the transports' until now"),
        Candidate("transport default", chosen, "us"),
        Candidate("quicker", QUICKER),
        Candidate("window of 100", {**chosen, "window": 100, "minimum_calls": 100}),
        Candidate("one probe", {**chosen, "half_open_calls": 1}),
        Candidate("resilience4j defaults", RESILIENCE4J),
    ]


# ---------------------------------------------------------------------------------------------
# Reporting

SPARED_TITLE = "breaker defaults: % of 1,000 calls rejected, host failing under half at random"
CUT_TITLE = "breaker defaults: % of 1,000 calls rejected, host failing half or more at random"
OPENING_TITLE = "breaker defaults: calls until the first opening"
RECOVERY_TITLE = (
    f"breaker defaults: % of calls rejected after a {OUTAGE / PER_SECOND:.0f} s outage "
    f"(then {AFTER_OUTAGE * 100:.3g} % failing)"
)


def _percent(share: float) -> str:
    return f"{share * 100:.3g} %"


def rows(summaries: Sequence[Summary]) -> list[Row]:
    """The bench rows: rejections at every failure share, speed of opening, recovery."""
    out: list[Row] = []
    seeds = summaries[0].seeds if summaries else 0
    for failing in RATES:
        # Under half: a good breaker lets the host be (lower is better, worst = most
        # rejected); half or more: it cuts the host (higher is better, worst = fewest).
        spare = failing < 0.5
        for s in summaries:
            c = s.candidate
            out.append(
                Row(
                    case=(
                        f"{SPARED_TITLE} (worst of {seeds} seeds)"
                        if spare
                        else f"{CUT_TITLE} (fewest of {seeds} seeds)"
                    ),
                    variant=f"{_percent(failing)} failing",
                    library=c.label,
                    role=c.role,
                    value=100.0 * (s.worst_rejected if spare else s.fewest_rejected)[failing],
                    unit="% rejected",
                    better="lower" if spare else "higher",
                    note=f"opened in {s.opened_in[failing]} of {s.seeds} seeds",
                )
            )
    for failing in (1.0, 0.6):
        for s in summaries:
            c = s.candidate
            slowest = s.slowest_opening.get(failing)
            never = s.seeds - s.opened_in[failing]
            note = "" if slowest is not None else f"never opened in {never} of {s.seeds} seeds"
            out.append(
                Row(
                    case=f"{OPENING_TITLE} (slowest of {s.seeds} seeds)",
                    variant=f"{_percent(failing)} failing",
                    library=c.label,
                    role=c.role,
                    value=None if slowest is None else float(slowest),
                    unit="calls",
                    better="lower",
                    note=note or c.describe(),
                )
            )
    for s in summaries:
        if s.recovery is None:
            continue
        c = s.candidate
        out.append(
            Row(
                case=f"{RECOVERY_TITLE} (mean of {seeds} seeds)",
                variant=f"{CALLS - OUTAGE} calls after it",
                library=c.label,
                role=c.role,
                value=100.0 * s.recovery,
                unit="% rejected",
                better="lower",
                note=c.note,
            )
        )
    return out


DOC_RATES = (0.2, 0.3, 0.35, 0.4, 0.5)


def _opening(s: Summary, failing: float) -> str:
    slowest = s.slowest_opening.get(failing)
    if slowest is not None:
        return f"{slowest} calls"
    return f"never in {s.seeds - s.opened_in[failing]} of {s.seeds} seeds"


SETTINGS = (
    "window",
    "minimum_calls",
    "failure_rate",
    "consecutive_failures",
    "half_open_calls",
    "open_duration",
)


def _table(head: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def settings_table(candidates: Sequence[Candidate]) -> str:
    """A markdown table of the candidates' settings (— for a setting left at its default)."""
    body = [
        [f"**{c.label}**", *(str(c.settings.get(key, "—")) for key in SETTINGS)] for c in candidates
    ]
    return "\n".join(_table(["candidate", *(f"`{key}`" for key in SETTINGS)], body))


def markdown(summaries: Sequence[Summary]) -> str:
    """The results table of docs/choosing-settings.md: one line per candidate."""
    head = [
        "candidate",
        *(f"rejected at {_percent(p)}" for p in DOC_RATES),
        "opens at 100 % within",
        "opens at 60 % within",
        f"rejected after a {OUTAGE / PER_SECOND:.0f} s outage",
    ]
    body = [
        [
            f"**{s.candidate.label}**",
            *(_percent(s.worst_rejected[p]) for p in DOC_RATES),
            _opening(s, 1.0),
            _opening(s, 0.6),
            "—" if s.recovery is None else _percent(s.recovery),
        ]
        for s in summaries
    ]
    return "\n".join(_table(head, body))


def run(settings: Settings) -> list[Row]:
    """Every candidate against every failure share, the worst of several seeds."""
    seeds = settings.scale(SEEDS_FULL, SEEDS_QUICK)
    return rows([evaluate(c, seeds=seeds, first_seed=settings.seed) for c in candidates()])


CASES = [Case("defaults", "breaker defaults from a simulation", run)]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.case_defaults [SEEDS]``: print the markdown table."""
    args = sys.argv[1:] if argv is None else argv
    seeds = int(args[0]) if args else SEEDS_FULL
    every = candidates()
    print(settings_table(every))
    print()
    print(markdown([evaluate(c, seeds=seeds) for c in every]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
