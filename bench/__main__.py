"""`python -m bench`: run the side-by-side benchmarks (see bench/_cli.py for the options)."""

from __future__ import annotations

from ._cli import main

raise SystemExit(main())
