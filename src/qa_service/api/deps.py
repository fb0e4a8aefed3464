"""What routes share: the service container, its `...Dep` aliases, and request guards."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Annotated

import anyio
from fastapi import Depends, Request

from qa_service.access.admission import Admission
from qa_service.access.clients import address_client
from qa_service.access.keys import KeyRing
from qa_service.access.tickets import StreamTickets
from qa_service.answers.cache.answer_cache import AnswerCache
from qa_service.answers.chats import ChatAnswers
from qa_service.answers.connection import connection_events
from qa_service.answers.registry import AnswerRegistry
from qa_service.answers.responses import StoredResponses
from qa_service.api.origins import page_may_start_answers
from qa_service.config import Settings
from qa_service.core import errors
from qa_service.core.draining import Drain
from qa_service.core.events import AnswerEvent
from qa_service.generation.probe import ProviderProbe
from qa_service.generation.prompt_library import PromptLibrary
from qa_service.observability.spans import AnswerSpans
from qa_service.observability.telemetry import Telemetry


@dataclass(frozen=True, slots=True)
class ProviderCapabilities:
    """What the configured provider offers a request, decided once in app.py."""

    # The scenarios a request may name: the demo provider's, else none.
    scenarios: tuple[str, ...] = ()
    # Where a named scenario goes in the chain's configurable fields.
    scenario_config_key: str = ""
    # Said in every meta event and in /readyz while the demo stands in for a provider.
    notice: str | None = None


@dataclass(frozen=True, slots=True)
class Service:
    """Everything a request needs, built once in the app's lifespan."""

    settings: Settings
    registry: AnswerRegistry
    # The prompts in force, reloaded while the service runs (prompt_library.py).
    prompts: PromptLibrary
    telemetry: Telemetry
    admission: Admission
    tickets: StreamTickets
    chats: ChatAnswers
    responses: StoredResponses
    capabilities: ProviderCapabilities
    # None: no keys are configured, and anyone may start an answer.
    keys: KeyRing | None = None
    probe: ProviderProbe | None = None
    # Begun by SIGTERM (server.py): no new answer starts here any more.
    drain: Drain = field(default_factory=Drain)
    # None: QA_ANSWER_CACHE_TTL_SECONDS is 0, and every answer asks the provider.
    cache: AnswerCache | None = None
    # None: OTEL_* does not turn tracing on (observability/tracing.py).
    answer_spans: AnswerSpans | None = None

    def refuse_new_answers_while_draining(self) -> None:
        """503 `shutting_down` once the drain has begun, with Retry-After: an
        answer started here now would likely be cut by the grace and asked
        again, a second provider call. A load balancer may still send new
        answers here for a few seconds; nothing is spent yet, so a retry on
        another instance is safe. Resumes are served: they cost no provider
        call, and a refused one could outlast its answer's resume grace."""
        if self.drain.draining:
            raise errors.QAServiceError(errors.SHUTTING_DOWN, {"Retry-After": "1"})

    def connection_events(
        self,
        answer_id: str,
        after: int,
        shutdown: anyio.Event,
        resumed_by: str | None = None,
        *,
        resumable: bool = True,
    ) -> AsyncGenerator[AnswerEvent]:
        """The answer's events after `after` for one connection, as the settings ask.

        `resumed_by` (a client, client_of): a resume, refused past the readers'
        bounds (429 too_many_readers) before its response. `resumable=False`:
        a client that cannot come back, whose hang-up cancels the answer at
        once (answers/connection.py).
        """
        return connection_events(
            self.registry,
            answer_id,
            after,
            shutdown,
            # One deadline for every connection, counted from SIGTERM: one that
            # opens during the drain gets what is left of the grace.
            drain_seconds=max(0.0, self.settings.shutdown_grace_seconds - self.drain.seconds()),
            coalesce_seconds=self.settings.coalesce_ms / 1000,
            client=resumed_by,
            resumable=resumable,
        )


async def get_service(request: Request) -> Service:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread
    # hop per request for a dict lookup.
    service: Service | None = getattr(request.app.state, "service", None)
    if service is None:
        raise errors.NotReadyError(errors.NOT_READY)
    return service


ServiceDep = Annotated[Service, Depends(get_service)]

# Where api/auth.py names the key's client for the request (access/keys.py).
CLIENT_KEY_ID = "client_key_id"


def client_of(request: Request) -> str:
    """Whom per-client limits count: the API key when keys are on, else the
    address (the client's, through QA_FORWARDED_ALLOW_IPS' proxies only; an
    IPv6 one by its QA_IPV6_CLIENT_PREFIX block: access/clients.py)."""
    key_id: str | None = getattr(request.state, CLIENT_KEY_ID, None)
    if key_id is not None:
        return key_id
    host = request.client.host if request.client else "unknown"
    # Every route that counts clients depends on ServiceDep, so the service is up.
    service: Service = request.app.state.service
    return address_client(host, service.settings.ipv6_client_prefix)


async def refuse_pages_of_other_sites(request: Request, service: ServiceDep) -> None:
    """Only our own page and QA_CORS_ORIGINS' pages may start a paid answer (origins.py)."""
    own_origin = f"{request.url.scheme}://{request.headers.get('host', '')}"
    bare_get = (
        request.method == "GET"
        and "authorization" not in request.headers
        and "ticket" not in request.query_params
        and "last-event-id" not in request.headers
    )
    allowed = service.settings.cors_origins
    if not page_may_start_answers(request.headers, own_origin, allowed, bare_get=bare_get):
        raise errors.QAServiceError(errors.CROSS_SITE_REFUSED)


def require_json(request: Request) -> None:
    # Only JSON: a form or text/plain POST is a "simple" cross-origin request
    # that browsers send from any page without a CORS preflight, so any site
    # could spend our provider budget through its visitors.
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise errors.QAServiceError(errors.UNSUPPORTED_MEDIA_TYPE)


def body_limit(settings: Settings) -> int:
    # The worst case a character costs in JSON is 12 bytes: an astral one
    # (emoji) escaped as a surrogate pair, \ud83d\ude00, which is what
    # Python's json.dumps and requests send by default. Plus room for the other
    # fields and each history message's own. A bigger body is refused before
    # it is buffered.
    chars = settings.max_query_chars + settings.max_history_chars
    return chars * 12 + settings.max_history_messages * 64 + 4096


async def read_capped_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.QAServiceError(errors.BODY_TOO_LARGE)
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise errors.QAServiceError(errors.BODY_TOO_LARGE)
    return bytes(body)
