"""The store's Lua scripts and their KEYS/ARGV contract, in one place.

Every write to a breaker's fleet state goes through one of these scripts, so that it is
atomic in Redis: a transition (compare-and-set on the epoch, or unconditional for an
operator), taking a HALF_OPEN probe slot, and reporting a probe's outcome (which judges the
fleet's probes as the state machine judges its own). `Scripts` loads them once per Redis and
calls them by name with arguments built here, so the argument order lives next to the Lua
that reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Protocol

from ._records import EPOCH_SLACK_MS, MAX_COUNT

if TYPE_CHECKING:
    from .._breaker._config import BreakerConfig

__all__ = [
    "PROBE_DONE_SCRIPT",
    "REPAIR_SCRIPT",
    "SCRIPTS",
    "TAKE_PROBE_SCRIPT",
    "TRANSITION_SCRIPT",
    "ScriptTarget",
    "Scripts",
    "probe_ttl_ms",
]

# A probe slot taken by a process that died is given back when the probe hash expires.
_MIN_PROBE_TTL_MS: Final = 10_000

# One hash per breaker holds the fleet state (fields state, epoch, until: Redis time in ms)
# and every process's window (field "w:<process id>", value
# "epoch:calls:failures:slow:run:version"). The scripts get it as KEYS[1] and the HALF_OPEN
# probe tally hash as KEYS[2]; the sync tick reads it with a plain HGETALL.
# ARGV[1]: channel, ARGV[2]: breaker name, ARGV[3]: the hash's TTL in ms; then each script's.
# Replies carry epoch -1 when the stored state is unusable (garbage, an epoch from the
# future): the caller then ignores it, and the next transition overwrites it.
_PRELUDE = f"""
for _, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'hash' and kind ~= 'none' then redis.call('DEL', key) end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function is_int(n, high)
  return n ~= nil and n == math.floor(n) and n >= 0 and n <= high
end
local st = redis.call('HMGET', KEYS[1], 'state', 'epoch', 'until')
local state = st[1] or 'closed'
local epoch = tonumber(st[2] or '0')
local until_ms = tonumber(st[3] or '0')
local valid = (state == 'closed' or state == 'open' or state == 'forced_open'
  or state == 'disabled') and is_int(epoch, now + {EPOCH_SLACK_MS})
  and is_int(until_ms, {MAX_COUNT})
if not valid then
  state = 'closed'
  epoch = 0
  until_ms = now
end
local reported = epoch
if not valid then reported = -1 end
local remaining = 0
if st[3] then remaining = until_ms - now end
"""

_SET_STATE = """
local function set_state(new, open_ms)
  local new_epoch = math.max(epoch + 1, now)
  redis.call('HSET', KEYS[1], 'state', new, 'epoch', new_epoch, 'until', now + open_ms)
  if new == 'forced_open' or new == 'disabled' then
    redis.call('PERSIST', KEYS[1])
  else
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
  end
  redis.call('DEL', KEYS[2])
  redis.call('PUBLISH', ARGV[1], new .. ' ' .. new_epoch .. ' ' .. open_ms .. ' ' .. ARGV[2])
  return {new, new_epoch, open_ms, 1}
end
"""

# The probe tally holds small non-negative integers only; anything else resets it.
_CLEAN_TALLY = """
local tally = redis.call('HVALS', KEYS[2])
for i = 1, #tally do
  if not is_int(tonumber(tally[i]), 1000000000) then
    redis.call('DEL', KEYS[2])
    break
  end
end
"""

# ARGV[4]: new state, ARGV[5]: expected epoch ('' = unconditional), ARGV[6]: open ms.
TRANSITION_SCRIPT: Final = (
    _PRELUDE
    + _SET_STATE
    + """
if ARGV[5] ~= '' and valid and tonumber(ARGV[5]) ~= epoch then
  return {state, reported, remaining, 0}
end
return set_state(ARGV[4], tonumber(ARGV[6]))
"""
)

# ARGV[4]: epoch, ARGV[5]: cap, ARGV[6]: probe ttl ms.
# Returns {granted (1, 0, or 2: no usable fleet state, probe locally), state, epoch, remaining}.
TAKE_PROBE_SCRIPT: Final = (
    _PRELUDE
    + _CLEAN_TALLY
    + """
if not valid then
  return {2, state, -1, 0}
end
if state ~= 'open' or epoch ~= tonumber(ARGV[4]) then
  return {0, state, epoch, remaining}
end
local taken = redis.call('HINCRBY', KEYS[2], 'taken', 1)
if taken > tonumber(ARGV[5]) then
  redis.call('HINCRBY', KEYS[2], 'taken', -1)
  return {0, state, epoch, remaining}
end
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return {1, state, epoch, remaining}
"""
)

# ARGV[4]: epoch, ARGV[5]: outcome (-1 = released, else the FAILURE|SLOW bits), ARGV[6]:
# planned probes, ARGV[7]: failure rate, ARGV[8]: consecutive mode (0/1), ARGV[9]: slow-call
# rate, ARGV[10]: open ms, ARGV[11]: probe ttl ms. Judges the fleet's probes like
# the state machine's verdict on a HALF_OPEN round (BreakerMachine._check_half_open_locked).
PROBE_DONE_SCRIPT: Final = (
    _PRELUDE
    + _SET_STATE
    + _CLEAN_TALLY
    + """
if not valid then
  return {state, -1, 0, 0}
end
if state ~= 'open' or epoch ~= tonumber(ARGV[4]) then
  return {state, epoch, remaining, 0}
end
local outcome = tonumber(ARGV[5])
if outcome < 0 then
  if tonumber(redis.call('HGET', KEYS[2], 'taken') or '0') > 0 then
    redis.call('HINCRBY', KEYS[2], 'taken', -1)
  end
  return {state, epoch, remaining, 0}
end
local done = redis.call('HINCRBY', KEYS[2], 'done', 1)
local failed = redis.call('HINCRBY', KEYS[2], 'failures', outcome % 2)
local slowed = redis.call('HINCRBY', KEYS[2], 'slow', outcome >= 2 and 1 or 0)
redis.call('PEXPIRE', KEYS[2], ARGV[11])
local planned = tonumber(ARGV[6])
if done < planned then
  return {state, epoch, remaining, 0}
end
local reopen
if ARGV[8] == '1' then
  reopen = failed > 0
else
  reopen = failed / planned >= tonumber(ARGV[7])
end
if reopen or slowed / planned >= tonumber(ARGV[9]) then
  return set_state('open', tonumber(ARGV[10]))
end
return set_state('closed', 0)
"""
)

# KEYS[1]: one of the store's hashes that holds another type (someone else's write): gone.
REPAIR_SCRIPT: Final = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'hash' and kind ~= 'none' then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

SCRIPTS: Final = {
    "transition": TRANSITION_SCRIPT,
    "take_probe": TAKE_PROBE_SCRIPT,
    "probe_done": PROBE_DONE_SCRIPT,
}


def probe_ttl_ms(open_duration: float) -> int:
    """How long a probe tally lives: a dead process's slot frees when it expires."""
    return max(_MIN_PROBE_TTL_MS, int(open_duration * 2000))


class ScriptTarget(Protocol):
    """The breaker a script works on: its hash (KEYS[1]), its probe tally (KEYS[2]), its
    name and its hash's TTL (ARGV[2] and ARGV[3])."""

    @property
    def key(self) -> str: ...

    @property
    def probes_key(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def ttl_ms(self) -> int: ...


class Scripts:
    """The scripts on one Redis client: loaded once (by SHA), called with their arguments.

    Not thread-safe by design and not needed to be: a lost race loads a script twice.
    """

    __slots__ = ("_channel", "_client", "_shas")

    def __init__(self, client: Any, channel: str) -> None:
        self._client = client
        self._channel = channel  # ARGV[1]: where transitions are PUBLISHed
        self._shas: dict[str, str] = {}

    def missing(self) -> list[tuple[str, str]]:
        """(name, text) of the scripts not loaded yet (the sync tick loads them)."""
        return [(name, text) for name, text in SCRIPTS.items() if name not in self._shas]

    def loaded(self, name: str, sha: object) -> None:
        """Remember the SHA Redis answered to a SCRIPT LOAD of *name*."""
        self._shas[name] = sha.decode() if isinstance(sha, bytes) else str(sha)

    def transition(self, target: ScriptTarget, new: str, expected: str, open_ms: int) -> Any:
        """Write state *new* (OPEN for *open_ms*) if the epoch is still *expected* ('' =
        unconditional). Reply: state, epoch, remaining ms, written (0/1)."""
        return self._call("transition", target, new, expected, open_ms)

    def take_probe(self, target: ScriptTarget, epoch: int, config: BreakerConfig) -> Any:
        """Take a fleet probe slot of the OPEN state of *epoch*. Reply: granted (1; 0; 2 = no
        usable fleet state, probe locally), state, epoch, remaining ms."""
        return self._call(
            "take_probe",
            target,
            epoch,
            config.half_open_calls,
            probe_ttl_ms(config.open_duration),
        )

    def probe_done(
        self, target: ScriptTarget, epoch: int, outcome: int, config: BreakerConfig
    ) -> Any:
        """Report a probe's *outcome* (-1: released) and judge the round once every probe
        has finished. Reply: state, epoch, remaining ms, written (0/1)."""
        return self._call(
            "probe_done",
            target,
            epoch,
            outcome,
            config.half_open_calls,
            repr(config.failure_rate),
            "0" if config.rate_trips else "1",
            repr(config.slow_call_rate),
            int(config.open_duration * 1000),
            probe_ttl_ms(config.open_duration),
        )

    def _sha(self, name: str) -> str:
        sha = self._shas.get(name)
        if sha is None:
            self.loaded(name, self._client.script_load(SCRIPTS[name]))
            sha = self._shas[name]
        return sha

    def _call(self, name: str, target: ScriptTarget, *args: object) -> Any:
        import redis.exceptions

        keys = (target.key, target.probes_key)
        argv = (self._channel, target.name, target.ttl_ms, *args)
        try:
            return self._client.evalsha(self._sha(name), 2, *keys, *argv)
        except redis.exceptions.NoScriptError:
            self._shas.clear()  # Redis restarted or SCRIPT FLUSH
            return self._client.evalsha(self._sha(name), 2, *keys, *argv)
