"""Command line: ``python -m resilience demo`` runs the live demo (see `resilience._demo`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen command; returns the exit status.

    Example:
        >>> main(["--help"])  # doctest: +SKIP
    """
    parser = argparse.ArgumentParser(
        prog="python -m resilience",
        description="Tools that come with the resilience library.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "demo",
        help="watch retries, a circuit breaker and deadlines handle a failing upstream (~15 s)",
        description=(
            "Start a local upstream on 127.0.0.1 that goes healthy, failing, slow and "
            "recovering, and show live how a resilient client and a bare httpx client fare."
        ),
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import main as demo

        return demo()
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
