"""An HTTP/1.1 server on raw asyncio streams that breaks a seeded share of its responses.

Each request draws its fate from a seeded random source, in arrival order:
- ``close``: the connection is closed before any byte of the response is sent;
- ``cut``: the headers and half of the declared Content-Length body are sent, then it closes;
- ``ok``: a normal response.

A POST runs its *side effect* (a counter per ``x-request-id``) as soon as it has been read,
before its fate: exactly what makes a blind POST retry run it twice. A POST carrying an
``Idempotency-Key`` already seen is answered without running the side effect again, as a
server that honours keys would. The server runs in a daemon thread with its own event loop
and stops on exit of its ``with`` block or after ``max_seconds``.
"""

from __future__ import annotations

import asyncio
import collections
import random
import threading
from types import TracebackType

GET_BODY = bytes(range(256)) * 16  # 4 KiB
POST_BODY = b'{"done": true}'


class FaultServer:
    """The faulty server; `reset()` before each client so every client meets the same fates.

    Example:
        >>> with FaultServer(close=0.1, cut=0.1, seed=1) as server:  # doctest: +SKIP
        ...     httpx.get(server.url + "get")
    """

    def __init__(self, *, close: float, cut: float, seed: int, max_seconds: float = 600.0) -> None:
        self.close_share = close
        self.cut_share = cut
        self.seed = seed
        self.max_seconds = max_seconds
        self.url = ""
        self.requests = 0
        self.side_effects: collections.Counter[str] = collections.Counter()
        self._keys: set[str] = set()
        self._rng = random.Random(seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    def reset(self) -> None:
        """Forget counters and keys, and restart the fate sequence from the seed."""
        self.requests = 0
        self.side_effects = collections.Counter()
        self._keys = set()
        self._rng = random.Random(self.seed)

    def _fate(self) -> str:
        draw = self._rng.random()
        if draw < self.close_share:
            return "close"
        if draw < self.close_share + self.cut_share:
            return "cut"
        return "ok"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method = lines[0].split(" ", 1)[0]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                if length:
                    await reader.readexactly(length)
                self.requests += 1
                body = GET_BODY
                if method == "POST":
                    body = POST_BODY
                    key = headers.get("idempotency-key")
                    if key is None or key not in self._keys:
                        self.side_effects[headers.get("x-request-id", "?")] += 1
                    if key is not None:
                        self._keys.add(key)
                fate = self._fate()
                if fate == "close":
                    return
                response = (
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
                    b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
                )
                if fate == "cut":
                    writer.write(response + body[: len(body) // 2])
                    await writer.drain()
                    return
                writer.write(response + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return
        finally:
            writer.close()

    async def _serve(self, started: threading.Event) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"
        started.set()
        async with server:
            try:
                await asyncio.wait_for(self._stop.wait(), self.max_seconds)
            except TimeoutError:
                pass

    def __enter__(self) -> FaultServer:
        started = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(self._serve(started))
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="bench-fault-server", daemon=True)
        self._thread.start()
        if not started.wait(10):
            msg = "the fault server did not start"
            raise RuntimeError(msg)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
