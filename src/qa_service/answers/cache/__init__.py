"""Pay once for each answer (QA_ANSWER_CACHE_TTL_SECONDS): a finished answer is served
again from its recording, and an identical question asked while it is written reads it.

- `keys.py`: what makes two questions the same (everything that shapes the answer).
- `recording.py`: a finished answer's pieces and their timing, as the cache keeps it.
- `sources.py`: the text of a hit (a replay) and of a join (another answer's log).
- `ports.py`: what the cache needs from a store (stores/memory_cache.py, redis_cache.py).
- `answer_cache.py`: deciding hit, join, miss or bypass, and each one's start and end.

Every client gets an answer of its own (its own id, log, cancel and resume); what
they share is the provider call behind them.
"""
