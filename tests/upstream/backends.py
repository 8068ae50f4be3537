"""Backends for the upstream tests: small ASGI apps whose behaviour a test changes while they
run under real uvicorn servers on 127.0.0.1 (not collected: no test_ prefix)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from tests.helpers import serve_asgi

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Backend:
    """Answers 200 with its name; a test sets ``delay`` (seconds), ``status``, or
    ``fail_every`` (every n-th request answers 503). It records what it was sent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.delay = 0.0
        self.status = 200
        self.fail_every = 0
        self.hits = 0
        self.hosts: list[str] = []
        self.targets: list[str] = []
        self._count = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        self.hits += 1
        headers = dict(scope["headers"])
        self.hosts.append(headers.get(b"host", b"").decode())
        query = scope["query_string"].decode()
        self.targets.append(scope["path"] + (f"?{query}" if query else ""))
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.status
        if self.fail_every and next(self._count) % self.fail_every == 0:
            status = 503
        body = self.name.encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-backend", body),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class Fleet:
    """Several backends, each under its own uvicorn; `stop` kills one while others run."""

    def __init__(self, count: int) -> None:
        self.backends = [Backend(f"b{i}") for i in range(count)]
        self.urls: list[str] = []
        self._stacks: list[ExitStack] = []

    def start(self) -> None:
        for backend in self.backends:
            stack = ExitStack()
            self.urls.append(stack.enter_context(serve_asgi(backend, timeout_graceful_shutdown=1)))
            self._stacks.append(stack)

    def stop(self, index: int) -> None:
        """Stop backend *index*'s server (its port then refuses connections)."""
        self._stacks[index].close()

    def close(self) -> None:
        for stack in self._stacks:
            stack.close()

    def by_name(self, name: str) -> Backend:
        return next(b for b in self.backends if b.name == name)


@contextmanager
def fleet(count: int) -> Iterator[Fleet]:
    """*count* backends served on 127.0.0.1, stopped at the end."""
    running = Fleet(count)
    try:
        running.start()
        yield running
    finally:
        running.close()
