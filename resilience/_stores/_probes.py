"""The Redis requests a HALF_OPEN probe makes for its caller, and the lane that runs them.

HALF_OPEN is fleet-wide: a probe needs a slot from a capped counter in Redis, and its outcome
is judged over the whole fleet's probes. Those are the only Redis requests made for a caller.
They run in the store's *probe lane* thread while the caller waits at most the store's
``timeout`` in total per probe (its slot, then its verdict); a caller that did the I/O itself
could block for several socket timeouts.
"""

from __future__ import annotations

import collections
import contextvars
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._outbox import Op, Outbox, ProbeOutcome
from ._records import BadRecord, script_reply
from ._redis_client import key_error

if TYPE_CHECKING:
    from ._bindings import RedisBinding
    from ._lua import Scripts

__all__ = ["ProbeLane", "ProbeRequests"]

# The Redis time a probe may still spend for its caller: take_probe and the wait for the
# verdict share one budget of `timeout` (the binding's id, seconds left). A context variable,
# so that concurrent probes in threads or asyncio tasks each have their own.
_probe_budget: contextvars.ContextVar[tuple[int, float] | None] = contextvars.ContextVar(
    "resilience_probe_budget", default=None
)


class _Job:
    __slots__ = ("done", "fn", "result")

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: object = None


class ProbeLane:
    """A thread that talks to Redis for callers, who wait for it with a deadline.

    A caller that did the I/O itself could block for several round trips (a fresh
    connection's handshake, a script load, the command), each bounded only by the socket
    timeout. Here the caller waits on an event, at most its budget; the lane finishes the
    request anyway and applies its result. Started on first use (the first HALF_OPEN probe).
    """

    __slots__ = ("_jobs", "_lock", "_name", "_ready", "_stopped", "_thread")

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: collections.deque[_Job] = collections.deque()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def submit(self, fn: Callable[[], object]) -> _Job:
        """Run *fn* in the lane; its job's ``done`` is set when it has run (or never will)."""
        job = _Job(fn)
        with self._lock:
            if self._stopped:
                job.done.set()
                return job
            self._jobs.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        self._ready.set()
        return job

    def _run(self) -> None:
        jobs = self._jobs
        while not self._stopped:
            self._ready.wait()
            self._ready.clear()
            while jobs and not self._stopped:
                job = jobs.popleft()
                try:
                    job.result = job.fn()  # the functions catch their own errors
                finally:
                    job.done.set()
        while jobs:
            jobs.popleft().done.set()

    def stop(self) -> None:
        """Stop the thread; jobs not yet run are dropped (their waiters are released)."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        self._ready.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)


class ProbeRequests:
    """`RedisStore`'s side of a probe's requests (a mixin: the store's state is its own)."""

    if TYPE_CHECKING:
        timeout: float
        _lane: ProbeLane
        _scripts: Scripts
        _outbox: Outbox
        _errors: tuple[type[BaseException], ...]

        @property
        def healthy(self) -> bool: ...

        def _report(self, name: str, what: str) -> None: ...

        def _mark_down(self, exc: BaseException) -> None: ...

        def _log_bug(self, exc: BaseException) -> None: ...

        def _run_queued(self, op: Op) -> None: ...

    def _take_probe(self, binding: RedisBinding) -> bool:
        """Ask for a fleet probe slot, waiting at most ``timeout`` (True: probe)."""
        if not self.healthy or binding.port is None:
            return True
        start = time.monotonic()
        job = self._lane.submit(lambda: self._request_probe(binding))
        answered = job.done.wait(self.timeout)
        left = self.timeout - (time.monotonic() - start)
        _probe_budget.set((id(binding), left))
        if not answered:
            return True  # Redis too slow: probe on local state (the lane finishes the request)
        return job.result is not False

    def _request_probe(self, binding: RedisBinding) -> bool:
        """In the lane: ask Redis for a probe slot; False if refused (fleet state applied)."""
        port = binding.port
        if port is None:
            return True
        try:
            granted, *rest = self._scripts.take_probe(binding, binding.epoch, port.config)
            state, epoch, remaining = script_reply(*rest)
        except self._errors as exc:
            if key_error(exc):
                self._report(binding.name, "wrong type")
            else:
                self._mark_down(exc)
            return True
        except BadRecord as bad:
            self._report(binding.name, bad.what)
            return True
        except Exception as exc:  # a bug here must not reach the caller either
            self._log_bug(exc)
            return True
        if granted:
            return True  # 1: a fleet slot; 2: no usable fleet state, a local probe
        binding.apply(state, epoch, remaining, "fleet state")
        return False

    def _settle(self, binding: RedisBinding) -> None:
        """Wait (within what is left of the probe's budget) for the fleet's verdict."""
        budget = self.timeout
        entry = _probe_budget.get()
        if entry is not None and entry[0] == id(binding):
            budget = entry[1]
            _probe_budget.set(None)
        if budget <= 0 or not self.healthy:
            return
        deadline = time.monotonic() + budget
        pending, mine = self._outbox.claim_outcomes(binding)
        if mine:
            self._lane.submit(lambda: self._run_outcomes(mine))
        for op in pending:
            left = deadline - time.monotonic()
            if left <= 0 or not op.done.wait(left):
                return

    def _run_outcomes(self, ops: list[ProbeOutcome]) -> None:
        """In the lane: judge a caller's probe outcomes now (not on the next tick)."""
        for index, op in enumerate(ops):
            try:
                self._run_queued(op)
            except self._errors as exc:
                self._outbox.requeue(list(ops[index:]))
                self._mark_down(exc)
                return
