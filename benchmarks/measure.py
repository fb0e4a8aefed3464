"""What every benchmark reads the same way: a process's CPU time, a percentile."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

# Main before issue 25 (94bbced), the "before" of its figures: its src/ and
# prompts/, exported here by ./benchmarks/run.sh (`git archive 94bbced src
# prompts`), under the results' untracked work directory.
BASELINE_SRC = Path(__file__).resolve().parent / "results" / "work" / "baseline" / "src"


def source_tree(path: str) -> Path:
    """An argparse type for a service's `src/` run through PYTHONPATH: absolute,
    and holding the package. The services run in the results' work directory,
    where a relative PYTHONPATH names nothing, and Python then imports the
    installed tree instead, silently: until this check, `--baseline-src
    benchmarks/results/work/baseline/src` (run.sh's own) measured this tree
    against itself."""
    tree = Path(path).resolve()
    if not holds_package(tree):
        raise argparse.ArgumentTypeError(f"{tree} holds no qa_service package")
    return tree


def holds_package(tree: Path) -> bool:
    """Whether a PYTHONPATH of `tree` runs its own service, not the installed one."""
    return (tree / "qa_service" / "__init__.py").is_file()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds the process has used so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def percentile(samples: list[float], q: float) -> float:
    """The nearest-rank `q` quantile (0 to 1) of `samples`."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def write_results(results: Path, name: str, started_at: datetime, report: dict[str, Any]) -> None:
    """`report` as `<name>-<UTC timestamp>.json` (kept, to compare runs over time) and
    `<name>.json` (the latest), under `results`; its `written_to` names the first."""
    path = results / f"{name}-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    report["written_to"] = str(path.relative_to(results.parents[1]))
    text = json.dumps(report, indent=2, ensure_ascii=False)
    path.write_text(text)
    (results / f"{name}.json").write_text(text)
