"""Helpers shared by several test modules (not collected: the name does not start with test_)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

REDIS_PORT = 6379


class TcpProxy:
    """A TCP proxy to Redis that a test can cut and restore (Redis itself keeps running)."""

    def __init__(self, target: int = REDIS_PORT) -> None:
        self.target = target
        self.port = 0
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._server: socket.socket | None = None

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self.port = server.getsockname()[1]
        self._server = server
        self._spawn(self._accept, server)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                downstream, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                downstream.close()
                return
            with self._lock:
                if self._server is not server:  # stopped meanwhile
                    downstream.close()
                    upstream.close()
                    return
                self._sockets += [downstream, upstream]
            self._spawn(self._pump, downstream, upstream)
            self._spawn(self._pump, upstream, downstream)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            sockets, self._sockets = self._sockets, []
        if server is not None:
            try:
                server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            server.close()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in self._threads:
            thread.join(timeout=2)
        self._threads = []


@contextmanager
def serve_asgi(app: Any, **config: Any) -> Iterator[str]:
    """Run *app* under a real uvicorn in a thread on 127.0.0.1 and a free port; yield its URL.

    *config* adds or overrides `uvicorn.Config` settings (e.g. ``http="h11"``).
    """
    import uvicorn

    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "log_level": "warning",
        "access_log": False,
        "lifespan": "off",
        "ws": "none",
        **config,
    }
    server = uvicorn.Server(uvicorn.Config(app, **settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    give_up = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > give_up or not thread.is_alive():
            msg = "uvicorn did not start"
            raise RuntimeError(msg)
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


# -- RabbitMQ (messaging tests) -------------------------------------------------------------

AMQP_PORT = 5672


def amqp_url(port: int = AMQP_PORT) -> str:
    """The test broker's URL (guest/guest on 127.0.0.1), optionally through a proxy's port."""
    return f"amqp://guest:guest@127.0.0.1:{port}/"


def rabbitmq_up() -> bool:
    """True when something listens on the RabbitMQ port of 127.0.0.1."""
    try:
        with socket.create_connection(("127.0.0.1", AMQP_PORT), timeout=0.5):
            return True
    except OSError:
        return False


class CuttableProxy(TcpProxy):
    """A `TcpProxy` that can also cut its live connections and hold traffic back.

    ``cut()`` closes every connection in flight but keeps accepting new ones (a network
    blip: clients reconnect at once). ``freeze()`` stops forwarding in both directions
    (bytes sent meanwhile, such as an ack, never arrive unless ``thaw()`` comes first).
    """

    def __init__(self, target: int = AMQP_PORT) -> None:
        super().__init__(target)
        self._flowing = threading.Event()
        self._flowing.set()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:  # type: ignore[override]
        try:
            while data := src.recv(65536):
                while not self._flowing.wait(0.05):
                    if src.fileno() == -1 or dst.fileno() == -1:
                        return  # cut while frozen: drop what was held
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> int:
        """Close every live connection (the listener stays); return how many were cut."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        return len(sockets) // 2

    def freeze(self) -> None:
        """Hold every byte back from now on."""
        self._flowing.clear()

    def thaw(self) -> None:
        """Forward again (what was held goes through, unless the connection was cut)."""
        self._flowing.set()

    def stop(self) -> None:
        self._flowing.set()
        super().stop()
