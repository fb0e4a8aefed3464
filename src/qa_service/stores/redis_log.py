"""An answer's log in a Redis stream: entries that each hold a batch of events.

One entry per batch, not per event: a script call and its two commands carry
everything a producer made within a few milliseconds (stores/write_behind.py),
where one `EVALSHA` of four commands per provider piece made a 200-piece
answer cost about 847 Redis commands (issue 21).

Entry ids say where a batch ends: `0-<last seq + 1>`, and `1-<last seq + 1>`
for the batch that holds the answer's last event. So
- a reader after seq `s` continues with one XREAD after `0-<s + 1>`: every
  entry past it holds an event past `s` (it drops the ones it has);
- the newest entry's id alone tells `describe` the last seq and whether the
  log has ended, and no entry can follow an end (`0-…` sorts below `1-…`);
- a batch goes in only if it starts right after the newest entry: the script
  compares, so a writer that lost a race, or a log that a failover or a
  restart cut short, is told where the log really ends, and the producer,
  which holds its whole answer, writes the rest again from there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from qa_service.core.events import AnswerEvent, from_dict, is_terminal, to_dict
from qa_service.stores.write_behind import BatchOutcome, BatchReply, WriteTiming

# KEYS: stream, hash. ARGV: first seq, entry id, events (a JSON array), MAXLEN,
# ttl, fingerprint, rewrite (0/1).
# Returns {1, next seq} stored; {0, next seq} the log has ended (this batch is
# refused); {2, next seq} the log does not end right before this batch: the
# caller writes again from `next seq`. A rewrite (after a lost log, or the
# first batch) also sets the fingerprint: a Redis that restarted empty gets the
# whole answer back, findable by `describe`. Both keys' expiry is set with a
# rewrite, with the batch that creates the stream (whoever writes it: a reader
# ending a log whose first batch never came must not leave a key for ever),
# and with the last one: a finished answer is kept QA_RESUME_TTL_SECONDS from
# its end, whenever the heartbeat last renewed them.
BATCH_SCRIPT = """
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local next_seq = 0
if #top > 0 then
  local ended, after = string.match(top[1][1], '^(%d+)-(%d+)$')
  next_seq = tonumber(after)
  if ended ~= '0' then return {0, next_seq} end
end
if next_seq ~= tonumber(ARGV[1]) then return {2, next_seq} end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], ARGV[2], 'e', ARGV[3])
if ARGV[7] == '1' then
  redis.call('HSET', KEYS[2], 'fingerprint', ARGV[6])
end
if ARGV[7] == '1' or #top == 0 or string.sub(ARGV[2], 1, 2) ~= '0-' then
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
end
return {1, tonumber(string.match(ARGV[2], '%d+$'))}
"""


@dataclass(frozen=True, slots=True)
class RedisLogSettings:
    # Every key of an answer expires this long after its last renewal (QA_RESUME_TTL_SECONDS).
    ttl_seconds: int
    # The stream keeps about this many entries (each a batch of events).
    max_entries: int
    # A producer's lease, and the resume grace (readers' presence), in seconds:
    # after an outage, their keys are not believed missing for this long.
    lease_seconds: float = 3.0
    grace_seconds: float = 5.0
    writes: WriteTiming = field(default_factory=WriteTiming)


def entry_id(events: Sequence[AnswerEvent]) -> str:
    last = events[-1]
    return f"{int(is_terminal(last))}-{last.seq + 1}"


def read_from(after: int) -> str:
    """The id an XREAD continues after, for a reader that has every seq up to `after`."""
    return f"0-{after + 1}"


def encode(events: Sequence[AnswerEvent]) -> str:
    # ASCII-escaped: a lone surrogate in a model's text survives the trip.
    return json.dumps([to_dict(event) for event in events], separators=(",", ":"))


def decode(entry_fields: dict[bytes, bytes]) -> list[AnswerEvent]:
    return [from_dict(item) for item in json.loads(entry_fields[b"e"])]


def batch_reply(raw: Any) -> BatchReply:
    outcome, next_seq = cast(list[int], raw)
    return BatchReply(BatchOutcome(int(outcome)), int(next_seq))


@dataclass(frozen=True, slots=True)
class LogTop:
    last_seq: int  # -1 before the first event
    final_seq: int | None  # set once the log has ended


def log_top(newest_id: bytes | str | None) -> LogTop:
    """What the newest entry's id says (None: the stream is empty or gone)."""
    if newest_id is None:
        return LogTop(-1, None)
    text = newest_id.decode() if isinstance(newest_id, bytes) else newest_id
    ended, after = text.split("-")
    last_seq = int(after) - 1
    return LogTop(last_seq, last_seq if ended != "0" else None)
