"""A page of another site cannot make Chromium start a paid answer."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.support.metrics import delta, read_metrics
from tests.support.providers import marker
from tests.support.service import RunningService
from tests.support.upstream_stub import UpstreamStub

ATTACK = """<!doctype html>
<title>another site</title>
<img src="{url}&via=img">
<script>
fetch("{url}&via=fetch", {{mode: "no-cors"}}).catch(() => {{}});
new EventSource("{url}&via=eventsource").onerror = (e) => e.target.close();
</script>
"""


@pytest.fixture
def other_site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static site on localhost: another site than the service on 127.0.0.1."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()


def test_an_img_a_no_cors_fetch_and_an_eventsource_from_another_site_are_refused(
    browser: Browser,
    openai_service: RunningService,
    stub: UpstreamStub,
    other_site: tuple[str, Path],
) -> None:
    key = marker()
    site, root = other_site
    (root / "attack.html").write_text(
        ATTACK.format(url=f"{openai_service.url}/ai_write?query={key}"), encoding="utf-8"
    )
    before = read_metrics(openai_service.url)
    context = browser.new_context()  # not the `page` fixture: 403s log console errors
    try:
        context.new_page().goto(f"{site}/attack.html")
        refused = 0.0
        deadline = time.monotonic() + 10
        while refused < 3:  # all three reached the service, and each was refused
            assert time.monotonic() < deadline, f"refused {refused} of 3"
            time.sleep(0.1)
            refused = delta(
                before,
                read_metrics(openai_service.url),
                "qa_requests_total",
                code="cross_site_refused",
            )
    finally:
        context.close()

    assert stub.exchanges_for(key) == []
