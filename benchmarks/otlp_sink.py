"""An OTLP/HTTP collector for benchmarks/tracing.py, in a process of its own.

    python -m benchmarks.otlp_sink

tests/support/otlp_receiver.py, run here rather than in the load generator, so
that decoding what the service exports costs neither the service's CPU nor the
load generator's event loop. Prints its port, then answers each line on its
stdin with a JSON line: the spans received so far, by name, and the exports
(POSTs) and their bytes, by path.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

from tests.support.otlp_receiver import run_receiver


def main() -> None:
    with run_receiver() as receiver:
        print(receiver.port, flush=True)
        for _ in sys.stdin:
            exports = receiver.exports()
            counts = {
                "spans": dict(Counter(span.name for span in receiver.spans())),
                "exports": dict(Counter(e.path for e in exports)),
                "bytes": sum(len(e.body) for e in exports),
            }
            print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
