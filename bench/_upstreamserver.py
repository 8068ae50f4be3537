"""Several HTTP/1.1 endpoints in one child process, each with its own latency and failure
rate: ``python -m bench._upstreamserver 0.005:0 0.05:0 0.005:0.5 --seed 1``.

Each argument is ``delay:fail`` for one endpoint: it answers after ``delay`` seconds (an
``asyncio.sleep``, so endpoints never slow each other down), with a 503 for a seeded share
``fail`` of its requests and a 200 otherwise. The process prints the ports on its first line
(space-separated), and exits when its parent goes away or after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import random

from bench._child import exit_with_parent

BODY = b"ok"
OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"


def _endpoint(delay: float, fail: float, rng: random.Random) -> object:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                if delay:
                    await asyncio.sleep(delay)
                writer.write(UNAVAILABLE if rng.random() < fail else OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return
        finally:
            writer.close()

    return handle


async def _serve(specs: list[tuple[float, float]], seed: int, max_seconds: float) -> None:
    servers = []
    for i, (delay, fail) in enumerate(specs):
        handler = _endpoint(delay, fail, random.Random(seed + i))
        servers.append(await asyncio.start_server(handler, "127.0.0.1", 0))  # type: ignore[arg-type]
    ports = [str(s.sockets[0].getsockname()[1]) for s in servers]
    print(" ".join(ports), flush=True)
    await asyncio.sleep(max_seconds)


def main() -> None:
    """Start one endpoint per ``delay:fail`` argument; print their ports."""
    parser = argparse.ArgumentParser()
    parser.add_argument("specs", nargs="+", help="delay:fail per endpoint")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args()
    specs = [(float(d), float(f)) for d, f in (s.split(":") for s in args.specs)]
    exit_with_parent(args.max_seconds)
    asyncio.run(_serve(specs, args.seed, args.max_seconds))


if __name__ == "__main__":
    main()
