"""A tiny ASGI app served by uvicorn in a child process: ``python -m bench._appserver``.

It prints its port on the first line of stdout (then binds it), answers every request with a
2-byte body, and exits by itself when its parent goes away or after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

from bench._child import exit_with_parent

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

BODY = b"ok"
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]


async def app(
    scope: Scope,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """Drain the request body, answer 200 "ok"."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    """Bind a free port, print it, serve until the parent leaves or time runs out."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()
    exit_with_parent(args.max_seconds)
    # uvicorn binds the port itself: serving a socket handed to Server.run(sockets=...) showed
    # 40 ms per keep-alive request here (delayed ACKs), which would measure nothing but that.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    print(port, flush=True)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off"
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
