"""Local servers the HTTP cases run against; every one is bounded in time and stops by itself."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent


def _wait_for_port(port: int, proc: subprocess.Popen[str], seconds: float = 15.0) -> None:
    give_up = time.monotonic() + seconds
    while time.monotonic() < give_up:
        if proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    msg = f"the app server is not listening on port {port}"
    raise RuntimeError(msg)


class AppServer:
    """uvicorn serving bench._appserver in a child process (its own core on a 2-core machine).

    *module* and *args* name another server module that prints its port first, as
    bench._appserver does. `start` and `wait_ready` split ``with``'s entry, so that several
    servers can start at once.

    Example:
        >>> with AppServer() as server:  # doctest: +SKIP
        ...     httpx.get(server.url)
    """

    def __init__(
        self,
        max_seconds: float = 900.0,
        *,
        module: str = "bench._appserver",
        args: Sequence[str] = (),
    ) -> None:
        self._max_seconds = max_seconds
        self._command = [sys.executable, "-m", module, *args]
        self._proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.port = 0

    def __enter__(self) -> AppServer:
        self.start()
        return self.wait_ready()

    def start(self) -> None:
        """Start the child process (`wait_ready` waits until it listens)."""
        self._proc = subprocess.Popen(
            [*self._command, "--max-seconds", str(self._max_seconds)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self) -> AppServer:
        """Wait for the child's port, then for it to listen; stops the child on failure."""
        assert self._proc is not None
        assert self._proc.stdout is not None
        port = self._proc.stdout.readline().strip()
        if not port.isdigit():
            self.__exit__(None, None, None)
            msg = f"the app server did not start (said {port!r})"
            raise RuntimeError(msg)
        self.url = f"http://127.0.0.1:{port}/"
        self.port = int(port)
        try:
            _wait_for_port(int(port), self._proc)
        except RuntimeError:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None
