"""What every bench server child process shares: it ends by itself when its parent does.

A bench run that is killed (Ctrl-C twice, a CI timeout) must not leave servers holding
ports: each child watches its parent and its own time limit.
"""

from __future__ import annotations

import os
import threading
import time


def _watch(parent: int, max_seconds: float) -> None:
    deadline = time.monotonic() + max_seconds
    while os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.5)
    os._exit(0)


def exit_with_parent(max_seconds: float) -> None:
    """End this process (at once, without cleanup) when its parent has gone or after
    *max_seconds*, whichever comes first; checked twice a second in a daemon thread."""
    threading.Thread(target=_watch, args=(os.getppid(), max_seconds), daemon=True).start()
