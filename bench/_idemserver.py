"""A FastAPI app with server-side idempotency on Redis, served by uvicorn in a child process:
``python -m bench._idemserver --prefix PREFIX --effects FILE`` (the fault campaign runs it under
``fiu-run``, which breaks its network calls: the clients' and Redis's alike).

``POST /effect`` is the side effect: each run appends one line, "<Idempotency-Key> <pid>", to
the effects file (a local file: ``fiu-run`` breaks only the network), so the parent can count
the runs of every key. ``POST /flaky`` raises on the first run of a key and succeeds after.
The server prints its port on the first line of stdout (then binds it), and exits by itself
when its parent goes away or after ``--max-seconds``. `IdemServer` starts one.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import redis
import uvicorn
from fastapi import FastAPI, Request

from bench._child import exit_with_parent
from resilience.idempotency import Idempotency
from resilience.integrations.fastapi import add_resilience
from resilience.stores import RedisStore

ROOT = Path(__file__).resolve().parent.parent


def read_effects(path: Path) -> collections.Counter[str]:
    """Runs per key, from an effects file."""
    if not path.exists():
        return collections.Counter()
    return collections.Counter(line.split(" ", 1)[0] for line in path.read_text().splitlines())


def build_app(
    prefix: str, effects: Path, *, redis_port: int, store_timeout: float, delay: float
) -> FastAPI:
    """The app: idempotency on a RedisStore under *prefix*; each run is a line in *effects*."""
    store = RedisStore(redis.Redis(port=redis_port), prefix=prefix, timeout=store_timeout)
    app = FastAPI()
    add_resilience(app, idempotency=Idempotency(store=store, lock_timeout=30.0))
    pid = os.getpid()

    def record(key: str) -> None:
        # O_APPEND: one write per line, whole, whichever process writes.
        fd = os.open(effects, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{key} {pid}\n".encode())
        finally:
            os.close(fd)

    @app.post("/effect")
    def effect(request: Request) -> dict[str, Any]:
        key = request.headers.get("idempotency-key", "")
        record(key)
        if delay:
            time.sleep(delay)
        return {"key": key, "pid": pid}

    @app.post("/flaky")
    def flaky(request: Request) -> dict[str, Any]:
        key = request.headers.get("idempotency-key", "")
        first = read_effects(effects)[key] == 0
        record(key)
        if first:
            raise RuntimeError("the first run of every key fails")
        return {"key": key, "pid": pid}

    @app.get("/health")
    def health() -> dict[str, int]:
        return {"pid": pid}

    return app


def main() -> None:
    """Bind a free port, print it, serve until the parent leaves or time runs out."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--effects", type=Path, required=True)
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--store-timeout", type=float, default=1.0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args()
    exit_with_parent(args.max_seconds)
    app = build_app(
        args.prefix,
        args.effects,
        redis_port=args.redis_port,
        store_timeout=args.store_timeout,
        delay=args.delay,
    )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    print(port, flush=True)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="asyncio",  # plain sockets: the send()/recv() that fiu-run breaks
        log_level="critical",
        access_log=False,
        lifespan="off",
        ws="none",
    )


FIU_RUN = "fiu-run"


def fiu_available() -> bool:
    """True when libfiu's fiu-run is installed (Debian: fiu-utils)."""
    return shutil.which(FIU_RUN) is not None


class IdemServer:
    """`python -m bench._idemserver` in a child process, under ``fiu-run`` when *faults* > 0.

    *faults* is the probability that any send() or recv() of the server fails (its clients'
    sockets and its Redis connections alike).

    Example:
        >>> with IdemServer("bench-idem:x:", Path("effects.txt")) as server:  # doctest: +SKIP
        ...     httpx.post(server.url + "effect", headers={"Idempotency-Key": "k"})
    """

    def __init__(
        self,
        prefix: str,
        effects: Path,
        *,
        faults: float = 0.0,
        delay: float = 0.0,
        max_seconds: float = 300.0,
    ) -> None:
        self.prefix = prefix
        self.effects = effects
        self.faults = faults
        self.delay = delay
        self.max_seconds = max_seconds
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None

    def command(self) -> list[str]:
        """The child's command line."""
        command = [
            sys.executable,
            "-m",
            "bench._idemserver",
            "--prefix",
            self.prefix,
            "--effects",
            str(self.effects),
            "--delay",
            str(self.delay),
            "--max-seconds",
            str(self.max_seconds),
        ]
        if self.faults <= 0:
            return command
        p = self.faults
        fiu = [FIU_RUN, "-x", "-f", ""]  # -f "": no control pipes left in the temp folder
        for name in ("posix/io/net/send", "posix/io/net/recv"):
            fiu += ["-c", f"enable_random name={name},probability={p}"]
        return [*fiu, *command]

    def __enter__(self) -> IdemServer:
        self._proc = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # under faults, asyncio logs every broken socket
            text=True,
        )
        assert self._proc.stdout is not None
        port = self._proc.stdout.readline().strip()
        if not port.isdigit():
            self.__exit__(None, None, None)
            msg = f"the idempotency server did not start (said {port!r})"
            raise RuntimeError(msg)
        self.url = f"http://127.0.0.1:{port}/"
        give_up = time.monotonic() + 30
        while True:
            try:
                # Faults may break a probe or two: only a clean answer says it is up.
                if httpx.get(self.url + "health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > give_up or self._proc.poll() is not None:
                self.__exit__(None, None, None)
                msg = "the idempotency server did not answer"
                raise RuntimeError(msg)
            time.sleep(0.05)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


if __name__ == "__main__":
    main()
