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

from qa_service.answers.model import AnswerRequest
from qa_service.api.deps import Service, client_of
from qa_service.core import errors
from qa_service.core.events import AnswerEvent, AnswerMeta


@dataclass(frozen=True, slots=True)
class OpenedAnswer:
    answer_id: str
    # Its events from the start (meta first), for this connection.
    events: AsyncGenerator[AnswerEvent]
    # Set by the response at shutdown (wire/sse.py event_stream_response).
    shutdown: anyio.Event
    # The client's limits (x-ratelimit-*), for the response.
    headers: dict[str, str]


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
    service: Service, answer_request: AnswerRequest, request: Request, scenario: str | None = None
) -> OpenedAnswer:
    """Start the answer, or refuse (QAServiceError, before any response).

    Refused when the process is draining (503 shutting_down), when it or
    the client is over a limit, when the store is down, and, within
    QA_FIRST_TEXT_HOLD_SECONDS, when the provider fails before any text
    (with its real status).
    """
    service.refuse_new_answers_while_draining()
    settings = service.settings
    admission = service.admission
    admitted = await admission.admit(client_of(request))
    try:
        # Here, before the 200: a store that is down is a 503 store_unavailable.
        run = await service.registry.start(
            answer_request,
            new_meta(service, answer_request, scenario),
            reader_within=settings.first_text_hold_seconds,
        )
    except BaseException:
        await admission.give_back(admitted)
        raise
    admission.release_when_ended(admitted, run)
    if settings.first_text_hold_seconds > 0:
        # Nothing is sent yet, so a provider that fails before any text gets
        # its real status (429, 502, 503, 504) instead of 200 and an event.
        failure = await run.first_output(settings.first_text_hold_seconds)
        if failure is not None:
            raise errors.AnswerFailedEarlyError(failure, admitted.headers)
    shutdown = anyio.Event()
    return OpenedAnswer(
        run.id, service.connection_events(run.id, -1, shutdown), shutdown, admitted.headers
    )
