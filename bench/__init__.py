"""Side-by-side benchmarks: `resilience` against its peers, in one process and one run.

Run everything with ``python -m bench`` (about 2 minutes on 2 cores), a smoke run with
``python -m bench --quick`` (under a minute), one case with ``--only breaker``, and get
machine-readable output with ``--json``. See docs/performance.md for the latest full table.

Every case measures our side and the peers in the same process and reports medians and the
ratio to our figure: ratios are what hold on a noisy machine, absolute numbers are not.
"""
