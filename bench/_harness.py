"""Timing, result rows and rendering shared by every case.

A case builds *contenders* (a bare baseline, our side, each peer), times them interleaved in
shuffled rounds inside one process, and returns one `Row` per contender. A contender that
cannot run says why in its row (``n/a`` for a peer without the feature, else an error) instead
of failing the run.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import importlib.metadata
import inspect
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

Better = Literal["lower", "higher"]
Role = Literal["baseline", "us", "peer"]

US = "resilience"
PEERS = (
    "pybreaker",
    "circuitbreaker",
    "purgatory",
    "aiobreaker",
    "tenacity",
    "stamina",
    "backoff",
    "httpx",
    "httpx-retries",
    "uvicorn",
)


class Unsupported(Exception):
    """A peer has no equivalent for this case (e.g. pybreaker has no asyncio support)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """How hard to measure: `--quick` keeps the whole run under a minute."""

    quick: bool
    number: int  # calls per timing sample
    repeat: int  # samples per contender = rounds x repeat, one per shuffled turn
    rounds: int
    seed: int

    @classmethod
    def for_mode(cls, *, quick: bool, seed: int = 20261129) -> Settings:
        """Settings for a quick smoke run or a full run.

        Example:
            >>> Settings.for_mode(quick=True).rounds
            1
        """
        if quick:
            return cls(quick=True, number=2_000, repeat=3, rounds=1, seed=seed)
        return cls(quick=False, number=20_000, repeat=5, rounds=3, seed=seed)

    def scale(self, full: int, quick: int) -> int:
        """Pick a count for this mode."""
        return quick if self.quick else full


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One measured figure: a contender's result in one variant of one case."""

    case: str
    variant: str
    library: str
    role: Role
    value: float | None
    unit: str
    better: Better
    note: str = ""
    error: bool = False
    added: float | None = None
    """Paired runs: the median per-turn difference to the baseline, in `unit`."""


@dataclass(frozen=True, slots=True)
class Contender:
    """Something to measure: `build()` returns the callable (sync, or async for async cases).

    `build` may be a coroutine function (async cases build inside the running loop) and may
    raise Unsupported for a peer without the feature.
    """

    library: str
    role: Role
    build: Callable[[], Any]
    note: str = ""


@dataclass(frozen=True, slots=True)
class Case:
    """A named benchmark: `run(settings)` returns its rows."""

    key: str
    title: str
    run: Callable[[Settings], list[Row]]


def log(message: str) -> None:
    """Progress goes to stderr so stdout stays a clean table or JSON document."""
    print(message, file=sys.stderr, flush=True)


def median(samples: Sequence[float]) -> float:
    """Median of the samples (the figure every case reports)."""
    return float(statistics.median(samples))


def failed_row(
    case: str, variant: str, contender: Contender, unit: str, better: Better, exc: BaseException
) -> Row:
    """The row for a contender that could not run: n/a when unsupported, else an error."""
    error = False
    if isinstance(exc, Unsupported):
        note = f"n/a: {exc}"
    else:
        note = f"error: {type(exc).__name__}: {str(exc)[:80]}"
        error = True
    return Row(
        case=case,
        variant=variant,
        library=contender.library,
        role=contender.role,
        value=None,
        unit=unit,
        better=better,
        note=note,
        error=error,
    )


def calls_per_sample(per_call_ns: float, settings: Settings) -> int:
    """Calls per timing sample: `settings.number`, fewer for slow contenders.

    A sample of a slow contender (tenacity: ~15 µs a call) is capped near SAMPLE_NS, which is
    already thousands of calls: more would lengthen the run without sharpening the median.
    """
    target = SAMPLE_NS_QUICK if settings.quick else SAMPLE_NS
    return max(100, min(settings.number, int(target / max(per_call_ns, 1.0))))


SAMPLE_NS = 40_000_000
SAMPLE_NS_QUICK = 10_000_000
_CALL = "f()"
_CALL_FAILING = "try:\n    f()\nexcept Exception:\n    pass"


def bench_sync(
    case: str,
    variant: str,
    contenders: Sequence[Contender],
    settings: Settings,
    *,
    failing: bool = False,
    cpu: bool = False,
    paired: bool = False,
) -> list[Row]:
    """Median ns per call of each contender's callable, interleaved in shuffled rounds.

    `failing=True` times calls that raise (the fail-fast path), swallowing the exception.
    `cpu=True` times with the process's CPU time instead of the wall clock: a sample then
    leaves out the time the process waited for a core, the main noise on a shared machine
    when a difference of a few µs is read off calls of 100 µs. timeit turns the garbage
    collector off while it times. `paired=True` notes each contender's median per-turn
    difference to the baseline.
    """
    stmt = _CALL_FAILING if failing else _CALL
    clock = time.process_time if cpu else time.perf_counter
    timers: dict[str, tuple[timeit.Timer, int]] = {}
    failed: dict[str, Row] = {}
    for contender in contenders:
        try:
            fn = contender.build()
            timer = timeit.Timer(stmt, timer=clock, globals={"f": fn})
            warm = min(settings.number, 500)
            per_call = timer.timeit(warm) * 1e9 / warm  # warm-up, and proof that it works
            timers[contender.library] = (timer, calls_per_sample(per_call, settings))
        except Exception as exc:
            failed[contender.library] = failed_row(
                case, variant, contender, "ns/call", "lower", exc
            )
    samples: dict[str, list[float]] = {name: [] for name in timers}
    rng = random.Random(settings.seed)
    # One sample per contender per turn, in a new order each turn: a burst of load from
    # elsewhere on the machine then lands on every contender alike.
    for _ in range(settings.rounds * settings.repeat):
        order = list(timers)
        rng.shuffle(order)
        for name in order:
            timer, number = timers[name]
            samples[name].append(timer.timeit(number) * 1e9 / number)
    return sample_rows(case, variant, contenders, samples, failed, paired=paired)


# An awaited coroutine that never suspends never hands control back to the event loop, so
# callbacks that a contender schedules (timers armed and cancelled per call) would pile up
# unprocessed for a whole sample. Yielding every CHUNK calls lets the loop run as it would in
# an application, and charges that work to the contender that caused it.
CHUNK = 256


async def _time_calls(
    fn: Callable[[], Awaitable[object]],
    number: int,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> float:
    start = clock()
    for i in range(number):
        await fn()
        if not i % CHUNK:
            await asyncio.sleep(0)
    return (clock() - start) / number


async def _time_failing_calls(fn: Callable[[], Awaitable[object]], number: int) -> float:
    start = time.perf_counter_ns()
    for i in range(number):
        if not i % CHUNK:
            await asyncio.sleep(0)
        try:
            await fn()
        except Exception:
            continue
    return (time.perf_counter_ns() - start) / number


def bench_async(
    case: str,
    variant: str,
    contenders: Sequence[Contender],
    settings: Settings,
    *,
    failing: bool = False,
    cpu: bool = False,
    paired: bool = False,
) -> list[Row]:
    """The async twin of bench_sync: awaits in one event loop, garbage collector off."""
    return asyncio.run(
        _bench_async(case, variant, contenders, settings, failing=failing, cpu=cpu, paired=paired)
    )


async def _bench_async(
    case: str,
    variant: str,
    contenders: Sequence[Contender],
    settings: Settings,
    *,
    failing: bool,
    cpu: bool = False,
    paired: bool = False,
) -> list[Row]:
    if failing:
        timed = _time_failing_calls
    elif cpu:
        timed = functools.partial(_time_calls, clock=time.process_time_ns)
    else:
        timed = _time_calls
    fns: dict[str, tuple[Callable[[], Awaitable[object]], int]] = {}
    failed: dict[str, Row] = {}
    for contender in contenders:
        try:
            fn = contender.build()
            if inspect.isawaitable(fn):
                fn = await fn
            per_call = await timed(fn, min(settings.number, 500))
            fns[contender.library] = (fn, calls_per_sample(per_call, settings))
        except Exception as exc:
            failed[contender.library] = failed_row(
                case, variant, contender, "ns/call", "lower", exc
            )
    samples: dict[str, list[float]] = {name: [] for name in fns}
    rng = random.Random(settings.seed)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(settings.rounds * settings.repeat):
            order = list(fns)
            rng.shuffle(order)
            for name in order:
                fn, number = fns[name]
                samples[name].append(await timed(fn, number))
    finally:
        if gc_was_enabled:
            gc.enable()
    return sample_rows(case, variant, contenders, samples, failed, paired=paired)


def sample_rows(
    case: str,
    variant: str,
    contenders: Sequence[Contender],
    samples: dict[str, list[float]],
    failed: dict[str, Row],
    *,
    paired: bool = False,
    unit: str = "ns/call",
) -> list[Row]:
    """A row per contender: the median of its samples (one per turn, in turn order).

    `paired=True` notes what each contender adds over the first baseline as the median of
    the per-turn differences: a drift of the machine's speed slower than a turn (a
    neighbour's load, the clock) hits both samples of a turn alike.
    """
    rows = []
    base = next((c.library for c in contenders if c.role == "baseline"), None)
    for contender in contenders:
        if contender.library in failed:
            rows.append(failed[contender.library])
            continue
        note = contender.note
        own = samples[contender.library]
        added: float | None = None
        if paired and base is not None and samples.get(base) and contender.library != base:
            added = median([mine - theirs for mine, theirs in zip(own, samples[base], strict=True)])
            note = f"{added:+,.0f} ns over bare, per turn" + (f"; {note}" if note else "")
        rows.append(
            Row(
                case=case,
                variant=variant,
                library=contender.library,
                role=contender.role,
                value=median(own),
                unit=unit,
                better="lower",
                note=note,
                added=added,
            )
        )
    return rows


def measure(
    case: str,
    variant: str,
    contender: Contender,
    unit: str,
    better: Better,
    run: Callable[[Any], float],
) -> Row:
    """One row from `run(built)`, a measurement that returns a single figure."""
    try:
        value = run(contender.build())
    except Exception as exc:
        return failed_row(case, variant, contender, unit, better, exc)
    return Row(
        case=case,
        variant=variant,
        library=contender.library,
        role=contender.role,
        value=value,
        unit=unit,
        better=better,
        note=contender.note,
    )


# ---------------------------------------------------------------------------------------------
# Environment and rendering


def environment() -> dict[str, str]:
    """Date, Python, CPU and library versions: what a figure means depends on all of them."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    env = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(terse=True),
        "cpu": f"{cpu} ({os.cpu_count()} cores)",
        "commit": _git_commit(),
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    for name in (US, *PEERS):
        try:
            env[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            env[name] = "not installed"
    return env


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip() or "unknown"
    try:
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "resilience"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return commit
    return f"{commit} + uncommitted changes in resilience/" if dirty else commit


def ratio(row: Row, rows: Sequence[Row]) -> float | None:
    """`row`'s value divided by ours in the same case and variant (None without both)."""
    if row.value is None:
        return None
    for other in rows:
        if (
            other.role == "us"
            and other.case == row.case
            and other.variant == row.variant
            and other.value
        ):
            return row.value / other.value
    return None


def format_value(value: float | None) -> str:
    """Thousands separators for large figures, three significant digits for small ones."""
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _cells(row: Row, rows: Sequence[Row], *, bold: bool) -> list[str]:
    r = ratio(row, rows)
    name = f"**{row.library}**" if bold and row.role == "us" else row.library
    return [
        row.variant,
        name,
        format_value(row.value),
        "—" if r is None else f"{r:.2f}x",
        row.note,
    ]


HEADERS = ["variant", "library", "value", "÷ ours", "note"]


def _groups(rows: Sequence[Row]) -> list[tuple[str, list[Row]]]:
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.case, []).append(row)
    return list(groups.items())


def _heading(case_rows: Sequence[Row]) -> str:
    first = case_rows[0]
    return f"{first.case} ({first.unit}, {first.better} is better)"


def render_markdown(rows: Sequence[Row]) -> str:
    """One GitHub-flavoured markdown table per case (what docs/performance.md holds)."""
    out = []
    for _, case_rows in _groups(rows):
        out += [f"#### {_heading(case_rows)}", ""]
        out.append("| " + " | ".join(HEADERS) + " |")
        out.append("|---|---|---:|---:|---|")
        out += ["| " + " | ".join(_cells(r, rows, bold=True)) + " |" for r in case_rows]
        out.append("")
    return "\n".join(out).rstrip()


def _aligned(
    headers: Sequence[str], groups: Sequence[tuple[str, list[list[str]]]], right: set[int]
) -> str:
    """Plain-text tables, one per (heading, lines) group, columns aligned across all."""
    table = [cells for _, lines in groups for cells in lines]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    out = []
    for heading, lines in groups:
        out += [heading, line(headers), line(["-" * w for w in widths])]
        out += [line(cells) for cells in lines]
        out.append("")
    return "\n".join(out).rstrip()


def render_text(rows: Sequence[Row]) -> str:
    """An aligned plain-text table per case."""
    groups = [
        (_heading(case_rows), [_cells(r, rows, bold=False) for r in case_rows])
        for _, case_rows in _groups(rows)
    ]
    return _aligned(HEADERS, groups, right={2, 3})


# ---------------------------------------------------------------------------------------------
# Comparison with a saved run (--save, --compare)

NOISE = 0.20  # default --tolerance: absolute figures move 10-30 % between runs on 2 cores


def run_document(
    mode: str, elapsed: float, env: dict[str, str], rows: Sequence[Row]
) -> dict[str, Any]:
    """The JSON document of a run: what --json prints and --save writes."""
    return {
        "mode": mode,
        "elapsed_seconds": round(elapsed, 1),
        "environment": env,
        "rows": [{**asdict(row), "ratio_to_ours": ratio(row, rows)} for row in rows],
        "summary": summary(rows),
    }


def rows_from_document(document: Any) -> list[Row]:
    """The rows of a saved run (a --save file or --json output); ValueError if it is none.

    Example:
        >>> rows_from_document({"rows": [{"case": "c", "variant": "v", "library": "l",
        ...     "role": "us", "value": 2.0, "unit": "ns/call", "better": "lower",
        ...     "ratio_to_ours": 1.0}]})[0].value
        2.0
    """
    names = {field.name for field in fields(Row)}
    try:
        return [Row(**{k: v for k, v in item.items() if k in names}) for item in document["rows"]]
    except (KeyError, TypeError, AttributeError) as exc:
        msg = f"not a saved bench run (python -m bench --save FILE writes one): {exc!r}"
        raise ValueError(msg) from exc


@dataclass(frozen=True, slots=True)
class Change:
    """A row of this run beside the same row (case, library, variant) of a saved run."""

    row: Row
    base: Row | None

    @property
    def factor(self) -> float | None:
        """This run's value divided by the saved one; None unless both have a value."""
        if self.base is None or self.row.value is None or not self.base.value:
            return None
        return self.row.value / self.base.value

    def verdict(self, tolerance: float) -> str:
        """WORSE or better beyond *tolerance* (a share, 0.2 = 20 %), given which way is better.

        Example:
            >>> now = Row(case="c", variant="v", library="l", role="us", value=130.0,
            ...           unit="ns/call", better="lower")
            >>> base = Row(case="c", variant="v", library="l", role="us", value=100.0,
            ...            unit="ns/call", better="lower")
            >>> Change(now, base).verdict(0.2), Change(now, base).verdict(0.5)
            ('WORSE', '')
        """
        factor = self.factor
        if factor is None:
            return "new" if self.base is None else "n/a"
        up, down = factor > 1.0 + tolerance, factor < 1.0 / (1.0 + tolerance)
        if self.row.better == "higher":
            up, down = down, up
        return "WORSE" if up else "better" if down else ""


def compare(rows: Sequence[Row], saved: Sequence[Row]) -> list[Change]:
    """Each row of this run with its saved twin, matched by case, library and variant."""
    by_key = {(r.case, r.library, r.variant): r for r in saved}
    return [Change(row, by_key.get((row.case, row.library, row.variant))) for row in rows]


COMPARE_HEADERS = ["variant", "library", "saved", "now", "now ÷ saved", ""]


def render_comparison(changes: Sequence[Change], tolerance: float = NOISE) -> str:
    """An aligned table per case: the saved figure, this run's, their ratio and a verdict."""
    groups: dict[str, list[Change]] = {}
    for change in changes:
        groups.setdefault(change.row.case, []).append(change)
    tables = []
    for case_changes in groups.values():
        lines = []
        for change in case_changes:
            factor = change.factor
            lines.append(
                [
                    change.row.variant,
                    change.row.library,
                    format_value(None if change.base is None else change.base.value),
                    format_value(change.row.value),
                    "—" if factor is None else f"{factor:.2f}x",
                    change.verdict(tolerance),
                ]
            )
        tables.append((_heading([c.row for c in case_changes]), lines))
    return _aligned(COMPARE_HEADERS, tables, right={2, 3, 4})


SPEED_UNITS = frozenset({"ns/call", "req/s", "µs/request"})


def _versus(us: Row, value: float, peers: Sequence[Row]) -> str:
    if us.better == "lower":
        best = min(peers, key=lambda r: r.value or 0.0)
        factor = (best.value or 0.0) / value
    else:
        best = max(peers, key=lambda r: r.value or 0.0)
        factor = value / (best.value or 1.0)
    if factor >= 2:
        verdict = "2x goal met"
    elif factor >= 1.05:
        verdict = "better, under 2x"
    elif factor > 0.95:
        verdict = "even"
    else:
        verdict = "WORSE"
    return f"{factor:.2f}x the best peer ({best.library}) [{verdict}]"


def summary(rows: Sequence[Row]) -> list[str]:
    """Speed figures only: ours against the fastest peer (issue 7 asks for 2x on happy paths)."""
    lines = []
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        if row.unit in SPEED_UNITS:
            groups.setdefault((row.case, row.variant), []).append(row)
    for (case, variant), group in groups.items():
        peers = [r for r in group if r.role == "peer" and r.value is not None]
        for us in group:
            if us.role != "us" or us.value is None or not peers:
                continue
            label = f"{case} / {variant}" + ("" if us.library == US else f" / {us.library}")
            lines.append(f"{label}: {_versus(us, us.value, peers)}")
    return lines
