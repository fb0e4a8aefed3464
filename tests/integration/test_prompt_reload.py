"""Prompt files edited while the service runs: a real service subprocess against the stub.

Each test edits its own prompt in the module's copy of prompts/, so they share
one service and do not depend on their order.
"""

from __future__ import annotations

import json
import shutil
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource

from tests.support.daemon import wait_until
from tests.support.prompt_files import prompt_file, write_atomically
from tests.support.providers import marker, provider_settings
from tests.support.service import RunningService, run_service
from tests.support.sse import Stream, read_stream
from tests.support.upstream_stub import Reply, UpstreamStub

REPO_PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
# A change is promised in force within 2 s; the polls allow for a busy machine.
RELOAD_DEADLINE = 10.0
REFUSED = "prompt file refused; its last good version stays in force"


@pytest.fixture(scope="module")
def prompts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("prompt-reload") / "prompts"
    shutil.copytree(REPO_PROMPTS, directory)
    return directory


@pytest.fixture(scope="module")
def service(
    stub: UpstreamStub, prompts_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    settings = {
        **provider_settings("openai", stub),
        "QA_PROMPTS_DIR": str(prompts_dir),
        # On for the cache test; the others ask unique questions, which miss.
        "QA_ANSWER_CACHE_TTL_SECONDS": "60",
    }
    with run_service(settings, tmp_path_factory.mktemp("prompt-reload-service")) as running:
        yield running


def _versions(service: RunningService) -> dict[str, str]:
    listed = httpx.get(f"{service.url}/prompts", timeout=10).json()
    return {p["name"]: p["version"] for p in listed["prompts"]}


def _system_part(stub: UpstreamStub, key: str) -> Any:
    [exchange] = stub.exchanges_for(key)
    return exchange.body["messages"][0]["content"]


def test_an_answer_in_progress_keeps_its_version_and_a_new_one_gets_the_edit(
    service: RunningService, stub: UpstreamStub, prompts_dir: Path
) -> None:
    old_version = _versions(service)["outline"]
    old_system = _system_part_of_file(prompts_dir / "outline.toml")
    slow, fresh = marker(), marker()
    # Paced: the old answer is still streaming when the edit is in force.
    pieces = [f"piece {i}. " for i in range(30)]
    stub.reply(slow, Reply(pieces=pieces, piece_delay=0.3))
    results: list[Stream] = []
    reader = threading.Thread(
        target=lambda: results.append(
            read_stream(service.url, params={"query": slow, "prompt": "outline"}, timeout=60)
        )
    )
    reader.start()
    try:
        stub.wait_for_request(slow, timeout=10)

        write_atomically(prompts_dir / "outline.toml", prompt_file("Edited outline."))
        new_version = wait_until(
            lambda: _versions(service)["outline"] != old_version and _versions(service)["outline"],
            RELOAD_DEADLINE,
            "the edited outline prompt in force",
        )
        new = read_stream(service.url, params={"query": fresh, "prompt": "outline"})
        # The old answer's upstream stream is still going: the edit landed mid-answer.
        assert not stub.exchanges_for(slow)[0].completed
    finally:
        reader.join(timeout=60)
    [old] = results

    assert new.events[0]["meta"]["prompt_version"] == new_version
    assert _system_part(stub, fresh) == "Edited outline."
    assert old.kinds[-1] == "done"
    assert old.text == "".join(pieces)
    assert old.events[0]["meta"]["prompt_version"] == old_version
    assert _system_part(stub, slow) == old_system
    # The answers' log lines name the versions they were written with.
    # read_stream sends no-store (httpx-sse): a bypass, whose provider call logs a line too.
    old_line = service.answer_record(old.headers["x-request-id"], cache="bypass")
    assert old_line["prompt_version"] == old_version
    new_line = service.answer_record(new.headers["x-request-id"], cache="bypass")
    assert new_line["prompt_version"] == new_version


def _system_part_of_file(path: Path) -> str:
    system = tomllib.loads(path.read_text())["system"]
    assert isinstance(system, str)
    return system


def test_a_broken_file_is_refused_with_one_line_and_the_last_good_version_answers(
    service: RunningService, stub: UpstreamStub, prompts_dir: Path
) -> None:
    before = _versions(service)
    good_system = _system_part_of_file(prompts_dir / "eli5.toml")

    write_atomically(prompts_dir / "eli5.toml", 'system = "no user part, and never closed\n')

    def refusals() -> list[dict[str, Any]]:
        return [r for r in service.log_records() if r.get("message") == REFUSED]

    [line] = wait_until(refusals, RELOAD_DEADLINE, "the refusal's log line")
    assert line["file"] == "eli5.toml"
    assert "never closed" not in str(line)  # the fault, never the content
    # Another change makes the service read the directory again: the broken
    # file is still refused, and not said twice.
    write_atomically(prompts_dir / "chat.toml", prompt_file("Edited chat."))
    wait_until(
        lambda: _versions(service)["chat"] != before["chat"],
        RELOAD_DEADLINE,
        "the edited chat prompt in force",
    )
    assert len(refusals()) == 1
    assert _versions(service)["eli5"] == before["eli5"]

    key = marker()
    answer = read_stream(service.url, params={"query": key, "prompt": "eli5"})

    assert answer.kinds[-1] == "done"
    assert answer.events[0]["meta"]["prompt_version"] == before["eli5"]
    assert _system_part(stub, key) == good_system


def _metas_of_cacheable_asks(service: RunningService, query: str, times: int) -> list[Any]:
    """Each ask's meta, sent as a client that lets the cache answer: httpx-sse's
    connect_sse (read_stream) always sends Cache-Control: no-store."""
    metas = []
    with httpx.Client(timeout=30) as client:
        for _ in range(times):
            headers = {"Accept": "text/event-stream"}
            params = {"query": query}
            with client.stream(
                "GET", f"{service.url}/ai_write", params=params, headers=headers
            ) as r:
                events = [json.loads(e.data) for e in EventSource(r).iter_sse() if e.data]
            assert next(iter(events[-1])) == "done"
            metas.append(events[0]["meta"])
    return metas


def test_an_edited_prompt_misses_the_answers_cached_on_its_old_version(
    service: RunningService, stub: UpstreamStub, prompts_dir: Path
) -> None:
    old_version = _versions(service)["explain"]
    key = marker()
    first, again = _metas_of_cacheable_asks(service, key, 2)
    assert [first["cache"], again["cache"]] == ["miss", "hit"]

    write_atomically(prompts_dir / "explain.toml", prompt_file("Edited explain."))
    new_version = wait_until(
        lambda: _versions(service)["explain"] != old_version and _versions(service)["explain"],
        RELOAD_DEADLINE,
        "the edited explain prompt in force",
    )
    [edited] = _metas_of_cacheable_asks(service, key, 1)

    assert edited["cache"] == "miss"
    assert edited["prompt_version"] == new_version
    # Two provider calls: the old version's, then the edited one's.
    systems = [e.body["messages"][0]["content"] for e in stub.exchanges_for(key)]
    assert systems[1:] == ["Edited explain."]


def test_the_openai_dialect_writes_with_the_version_in_force(
    service: RunningService, stub: UpstreamStub
) -> None:
    body = {"model": "outline", "messages": [{"role": "user", "content": marker()}]}
    version = _versions(service)["outline"]

    # no-store: a bypass; its provider call (`source`) logs a line of its own too.
    headers = {"Cache-Control": "no-store"}
    url = f"{service.url}/v1/chat/completions"
    response = httpx.post(url, json=body, headers=headers, timeout=30)

    assert response.status_code == 200
    line = service.answer_record(response.headers["x-request-id"], cache="bypass")
    assert line["prompt_version"] == version
