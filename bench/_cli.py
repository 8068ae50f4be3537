"""Command line of `python -m bench`.

    python -m bench                  # full run, readable table (about 5 minutes on 2 cores)
    python -m bench --quick          # smoke run under a minute (what CI runs)
    python -m bench --json           # the same figures as JSON on stdout
    python -m bench --markdown       # the table docs/performance.md holds
    python -m bench --only breaker   # cases whose key contains "breaker"
    python -m bench --profile breaker-sync   # cProfile of our side of one happy path

Exit status 1 when any contender raised an unexpected error (a "not built yet" is no error).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict

from . import (
    case_breaker,
    case_concurrency,
    case_faults,
    case_httpx,
    case_memory,
    case_policy,
    case_retry,
)
from ._harness import (
    Case,
    Row,
    Settings,
    environment,
    log,
    ratio,
    render_markdown,
    render_text,
    summary,
)

CASES: list[Case] = [
    *case_breaker.CASES[:1],
    *case_retry.CASES,
    *case_policy.CASES,
    *case_breaker.CASES[1:],
    *case_concurrency.CASES,
    *case_httpx.CASES,
    *case_memory.CASES,
    *case_faults.CASES,
]


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, under a minute")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="JSON on stdout")
    output.add_argument("--markdown", action="store_true", help="markdown table on stdout")
    parser.add_argument(
        "--only", action="append", default=[], metavar="KEY", help="cases whose key contains KEY"
    )
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--seed", type=int, default=20261129, help="seed for order and faults")
    parser.add_argument("--profile", metavar="TARGET", help="cProfile one of our happy paths")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected cases and print the table; returns the exit status."""
    args = parse(argv)
    if args.list:
        for case in CASES:
            print(f"{case.key:16} {case.title}")
        return 0
    if args.profile:
        from ._profile import profile

        return profile(args.profile)
    settings = Settings.for_mode(quick=args.quick, seed=args.seed)
    selected = [c for c in CASES if not args.only or any(k in c.key for k in args.only)]
    started = time.perf_counter()
    rows: list[Row] = []
    for case in selected:
        log(f"[bench] {case.title} ...")
        t0 = time.perf_counter()
        rows.extend(case.run(settings))
        log(f"[bench] {case.title}: {time.perf_counter() - t0:.1f} s")
    elapsed = time.perf_counter() - started
    env = environment()
    mode = "quick" if settings.quick else "full"
    if args.json:
        document = {
            "mode": mode,
            "elapsed_seconds": round(elapsed, 1),
            "environment": env,
            "rows": [{**asdict(row), "ratio_to_ours": ratio(row, rows)} for row in rows],
            "summary": summary(rows),
        }
        json.dump(document, sys.stdout, indent=2)
        print()
    else:
        header = ", ".join(f"{k} {v}" for k, v in env.items())
        print(f"{mode} run in {elapsed:.0f} s; {header}\n")
        print(render_markdown(rows) if args.markdown else render_text(rows))
        print("\nSpeed, ours against the fastest peer:")
        for line in summary(rows):
            print(f"- {line}")
    errors = [row for row in rows if row.error]
    for row in errors:
        log(f"[bench] ERROR {row.case} / {row.variant} / {row.library}: {row.note}")
    return 1 if errors else 0
