"""Opening a new answer, for every dialect: admit it, start it, hold for its first text.

Each dialect's route checks its own request, turns it into an AnswerRequest,
and renders the events this hands back. Keys, limits, budgets, metrics and
logs are therefore the same whatever the client speaks.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

import anyio
from asgi_correlation_id import correlation_id
from starlette.requests import Request

from qa_service.answers.cache.answer_cache import CacheControls
from qa_service.answers.cache.sources import RelaySource
from qa_service.answers.model import AnswerRequest
from qa_service.answers.run import AnswerRun
from qa_service.api.deps import Service, client_of
from qa_service.core import errors
from qa_service.core.errors import PublicError
from qa_service.core.events import AnswerEvent, AnswerMeta
from qa_service.observability.spans import name_request, phase

# How long after the first-text hold the request that opened an answer may
# take to attach as its reader (its stream's first step) before the resume
# grace starts counting. On a starved loop that took over 10 s (grace plus
# hold), and answers whose client was still waiting ended `cancelled` (61 of
# 6,600 in a burst, issue 25). A reader's first touch replaces it, and a
# hang-up before it is seen when the stream starts, so only an opener that
# never starts its stream could hold an answer this long.
OPENING_ALLOWANCE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class OpenedAnswer:
    answer_id: str
    # Its events from the start (meta first), for this connection.
    events: AsyncGenerator[AnswerEvent]
    # Set by the response at shutdown (wire/sse.py event_stream_response).
    shutdown: anyio.Event
    # The client's limits (x-ratelimit-*), for the response.
    headers: dict[str, str]
    # False: the client has no way back to this answer (an OpenAI chat
    # completion), so its hang-up cancels it at once, with no resume grace.
    resumable: bool = True


def new_meta(service: Service, answer_request: AnswerRequest, scenario: str | None) -> AnswerMeta:
    settings = service.settings
    return AnswerMeta(
        request_id=correlation_id.get() or "",
        provider=settings.resolved_provider,
        model=settings.resolved_model,
        prompt=answer_request.prompt,
        prompt_version=answer_request.prompt_version or None,
        demo_fallback=settings.is_demo_fallback,
        notice=service.capabilities.notice,
        scenario=scenario,
    )


async def open_answer(
    service: Service,
    answer_request: AnswerRequest,
    request: Request,
    scenario: str | None = None,
    *,
    resumable: bool = True,
) -> OpenedAnswer:
    """Start the answer, or refuse (QAServiceError, before any response).

    Refused when the process is draining (503 shutting_down), when it or
    the client is over a limit, when the store is down, and, within
    QA_FIRST_TEXT_HOLD_SECONDS, when the provider fails before any text
    (with its real status).

    A client that hangs up during that hold never had the answer's id: its
    answer is cancelled at once. `resumable=False`: the dialect gives its
    client no way back to the answer at all (docs/PROTOCOL.md says which), so
    its hang-up at any point cancels it at once, whatever
    QA_RESUME_GRACE_SECONDS says.
    """
    service.refuse_new_answers_while_draining()
    settings = service.settings
    admission = service.admission
    client = client_of(request)
    # A hit is admitted too: a request is a request (QA_RATE_LIMIT). Its tokens
    # cost nothing: with the cache, only a provider call is charged, to the
    # client that started it (answers/cache/answer_cache.py).
    meta = new_meta(service, answer_request, scenario)
    name_request(meta.request_id)
    with phase("qa.admission"):
        admitted = await admission.admit(client)
    try:
        # Here, before the 200: a store that is down is a 503 store_unavailable.
        run = await _start(service, answer_request, meta, client, request)
    except BaseException:
        await admission.give_back(admitted)
        raise
    admission.release_when_ended(admitted, run)
    if run.meta.cache is not None:
        admitted.headers["x-qa-cache"] = run.meta.cache
        service.telemetry.cache_outcome(run.meta.cache)
        if service.answer_spans is not None and isinstance(run.source, RelaySource):
            # A join (or a miss) reads a shared provider call: its trace links to it.
            service.answer_spans.link(run.source.shared_id, run.meta.cache)
    if settings.first_text_hold_seconds > 0:
        # Nothing is sent yet, so a provider that fails before any text gets
        # its real status (429, 502, 503, 504) instead of 200 and an event.
        with phase("qa.first_text_hold"):
            failure = await _first_output_while_connected(
                run, settings.first_text_hold_seconds, request
            )
        if failure is not None:
            raise errors.AnswerFailedEarlyError(failure, admitted.headers)
    shutdown = anyio.Event()
    events = service.connection_events(run.id, -1, shutdown, resumable=resumable)
    return OpenedAnswer(run.id, events, shutdown, admitted.headers, resumable)


async def _first_output_while_connected(
    run: AnswerRun, hold: float, request: Request
) -> PublicError | None:
    """run.first_output, while the client is there: one that hangs up during the
    hold cancels its answer now, in every dialect. It has not been sent the
    answer's id, so it could never resume it, and no grace would buy anything.
    A silent provider holds it for up to QA_FIRST_TEXT_HOLD_SECONDS (5 s), and
    until the response starts, nothing else listens to the connection."""
    failure: list[PublicError | None] = []
    async with anyio.create_task_group() as group:
        group.start_soon(cancel_on_disconnect, request, group.cancel_scope)
        failure.append(await run.first_output(hold))
        group.cancel_scope.cancel()
    if not failure:  # the client left
        await run.cancel(errors.CANCELLED, "client_disconnected")
        raise errors.QAServiceError(errors.CANCELLED)
    return failure[0]


async def cancel_on_disconnect(request: Request, scope: anyio.CancelScope) -> None:
    """Cancel `scope` when the client has gone (the ASGI server's http.disconnect).
    For a request whose body has been read: what comes after it is the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _start(
    service: Service, answer_request: AnswerRequest, meta: AnswerMeta, client: str, request: Request
) -> AnswerRun:
    """A new answer: through the answer cache when it is on."""
    reader_within = service.settings.first_text_hold_seconds + OPENING_ALLOWANCE_SECONDS
    if service.cache is None:
        return await service.registry.start(answer_request, meta, reader_within=reader_within)
    return await service.cache.start(
        answer_request, meta, client, cache_controls(request), reader_within=reader_within
    )


def cache_controls(request: Request) -> CacheControls:
    """The request's Cache-Control directives the cache honours (RFC 9111 5.2.1):
    `no-cache` asks afresh and keeps the result, `no-store` keeps nothing.

    A `no-cache` that comes with `Pragma: no-cache` is the browser's, not the
    page's: every EventSource request carries that pair (the HTML standard
    fetches it with cache mode "no-store", for which Fetch adds both headers;
    seen from Chromium), so honouring it would make every browser's answer a
    bypass. A page that wants a fresh answer sends `Cache-Control: no-cache`
    itself (fetch `headers`), which comes without the Pragma.
    """
    directives = _directives(request, "cache-control")
    browsers_own = "no-cache" in _directives(request, "pragma")
    return CacheControls(
        no_cache="no-cache" in directives and not browsers_own,
        no_store="no-store" in directives,
    )


def _directives(request: Request, header: str) -> set[str]:
    return {
        part.split("=", 1)[0].strip().lower()
        for value in request.headers.getlist(header)
        for part in value.split(",")
    }
