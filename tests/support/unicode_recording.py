"""A recorded answer of the demo's unicode scenario (tests/js/fixtures/).

Its text was extracted from the recording, independently of the demo's code,
so a test that compares against it sees damage to the sample as well as to
the path. The JS client's tests read the same recording.
"""

from __future__ import annotations

import json

from tests.support.service import REPO

_EXPECTED = json.loads(
    (REPO / "tests" / "js" / "fixtures" / "unicode-stream.expected.json").read_text("utf-8")
)

# The question the recording answers.
QUERY = "split 👩\u200d🔬 {x}"
TEXT: str = _EXPECTED["text"]
# Every event, meta and done included.
EVENTS: int = _EXPECTED["events"]
