"""MemoryStore against a plain model of the claim/complete/release contract (hypothesis).

The model is a dict of records with their expiry, evaluated on the same fake clock; every
answer of the store must match it, whatever the order of claims, completions, releases,
lock expiries and result expiries. (maxsize is large enough here that nothing is evicted;
eviction has its own tests.)
"""

from __future__ import annotations

from dataclasses import dataclass

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from resilience._idempotency._backend import Busy, Claimed, Done
from resilience.stores import MemoryStore
from resilience.testing import FakeClock

KEYS = st.sampled_from(["a", "b", "c"])
FINGERPRINTS = st.sampled_from(["f1", "f2"])
SECONDS = st.sampled_from([0.5, 1.0, 5.0, 10.0])


@dataclass
class Record:
    fingerprint: str
    token: str | None  # None once done
    until: float
    value: bytes = b""


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.store = MemoryStore(maxsize=1000, clock=self.clock)
        self.model: dict[str, Record] = {}
        self.tokens: list[tuple[str, str]] = []  # every (key, token) ever handed out

    def live(self, key: str) -> Record | None:
        record = self.model.get(key)
        if record is None or self.clock() >= record.until:
            return None
        return record

    @rule(key=KEYS, fingerprint=FINGERPRINTS, lock=SECONDS)
    def claim(self, key: str, fingerprint: str, lock: float) -> None:
        result = self.store.claim(key, fingerprint, lock)
        record = self.live(key)
        if record is None:
            assert isinstance(result, Claimed)
            self.model[key] = Record(fingerprint, result.token, self.clock() + lock)
            self.tokens.append((key, result.token))
        elif record.token is None:
            assert result == Done(record.fingerprint, record.value)
        else:
            assert isinstance(result, Busy)
            assert result.fingerprint == record.fingerprint
            assert result.retry_after == record.until - self.clock() > 0

    @rule(data=st.data(), value=st.binary(max_size=4), ttl=SECONDS)
    def complete(self, data: st.DataObject, value: bytes, ttl: float) -> None:
        if not self.tokens:
            return
        key, token = data.draw(st.sampled_from(self.tokens))
        self.store.complete(key, token, value, ttl)
        record = self.model.get(key)
        # The owner completes even after its lock ran out, as long as nobody took over.
        if record is not None and record.token == token:
            self.model[key] = Record(record.fingerprint, None, self.clock() + ttl, value)

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        if not self.tokens:
            return
        key, token = data.draw(st.sampled_from(self.tokens))
        self.store.release(key, token)
        record = self.model.get(key)
        if record is not None and record.token == token:
            del self.model[key]

    @rule(seconds=SECONDS)
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def at_most_one_owner_per_key(self) -> None:
        for key in ("a", "b", "c"):
            record = self.live(key)
            if record is not None and record.token is not None:
                result = self.store.claim(key, record.fingerprint, 1.0)
                assert isinstance(result, Busy)  # a live owner is never displaced


StoreMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_memory_store_matches_model = StoreMachine.TestCase
