"""Reading /metrics with prometheus-client's own parser."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families


def read_metrics(base_url: str) -> dict[str, float]:
    """Every sample, keyed `name{label="value",...}` with labels sorted."""
    response = httpx.get(f"{base_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        value
        for key, value in samples.items()
        if key.split("{", 1)[0] == name and all(w in key for w in wanted)
    )


def delta(before: dict[str, float], after: dict[str, float], name: str, **labels: str) -> float:
    """How much `name` (summed over samples matching `labels`) grew between two reads."""
    return total(after, name, **labels) - total(before, name, **labels)


def settled_metrics(base_url: str, timeout: float = 10.0) -> dict[str, float]:
    """Every sample, read once no answer is being generated.

    The services are shared by a whole session: an answer an earlier test left
    (a hang-up, a cancel) may still be ending, and would count between two reads.
    An answer's counters move in the same step as it leaves qa_active_streams.
    """
    deadline = time.monotonic() + timeout
    while True:
        samples = read_metrics(base_url)
        if total(samples, "qa_active_streams") == 0:
            return samples
        assert time.monotonic() < deadline, "answers still running at the deadline"
        time.sleep(0.02)
