"""Who may start an answer: the API key (or stream ticket) checks, as dependencies.

With QA_API_KEYS or QA_API_KEYS_FILE set, a request that starts a new answer
needs `Authorization: Bearer <key>`, or on GET/HEAD /ai_write a `ticket` from
POST /stream-tickets. Everything else stays open; in particular a resume or a
cancel is authorised by the answer id, a capability only the client that
started the answer was given (docs/PROTOCOL.md, "API keys"). A stored
Responses response is the exception: its id finds it only for its client, the
key's, so its reads (retrieve, resume, cancel) need the key too.

On success `request.state.client_key_id` names the key's client (access/keys.py:
`key:<label>` or `key:<16 hex>`): per-client limits use it as the client, and
fall back to the client address when it is not set (keys off, or a resume).

Every refusal is the same 401 `unauthorized`, whatever went wrong; the reason
goes only to the `qa_auth_refusals_total` metric. Keys and tickets are never
logged, nor put in an exception's message.
"""

from __future__ import annotations

from typing import NoReturn

from fastapi import Request

from qa_service.access.keys import bearer_token, key_digest
from qa_service.access.tickets import TicketRefusal
from qa_service.answers.model import AnswerRequest
from qa_service.api.asks import ask_from_query_string, checked_request, resumes
from qa_service.api.deps import CLIENT_KEY_ID, Service, ServiceDep
from qa_service.core import errors

# Where the key check leaves the presented key's digest, for a ticket it buys.
KEY_DIGEST = "key_digest"
# Where a ticketed GET leaves the request its ticket was checked against, so
# that the route checks the query string once, not twice.
TICKETED_REQUEST = "ticketed_request"


async def require_key(request: Request, service: ServiceDep) -> None:
    """POST /stream-tickets: a key, when keys are on. (A ticket cannot buy a ticket.)"""
    if service.keys is not None:
        _admit_key(request, service)


async def require_key_or_ticket(request: Request, service: ServiceDep) -> None:
    """/ai_write: a new answer needs a key, or on GET and HEAD a ticket.

    A resume (Last-Event-ID) needs neither: it continues the answer it names
    or is refused, and never starts one. That is what lets an EventSource
    reconnect, which sends the same URL with its spent ticket again.
    """
    if resumes(request):
        return
    ticket = request.query_params.get("ticket") if request.method != "POST" else None
    if service.keys is not None and "authorization" in request.headers:
        _admit_key(request, service)
    elif ticket is not None:
        # Checked even with keys off: a client that sends one learns of its mistake.
        await _admit_ticket(request, service, ticket)
    elif service.keys is not None:
        _refuse(service, "no_credentials")


def _admit_key(request: Request, service: Service) -> None:
    assert service.keys is not None
    token = bearer_token(request.headers.get("authorization", ""))
    digest = key_digest(token) if token is not None else ""
    client = service.keys.client_of(digest)
    if client is None:
        _refuse(service, "wrong_key")  # or an Authorization header of another scheme
    setattr(request.state, CLIENT_KEY_ID, client)
    setattr(request.state, KEY_DIGEST, digest)


async def _admit_ticket(request: Request, service: Service, ticket: str) -> None:
    try:
        answer_request = checked_request(service, ask_from_query_string(request))
    except errors.QAServiceError:
        # Tickets are issued only for requests that pass these checks, so this
        # one cannot match any: the same 401 as a bad ticket, and nothing spent.
        _refuse(service, TicketRefusal.UNKNOWN.value)
    redeemed = await service.tickets.redeem(ticket, answer_request, service.keys)
    if isinstance(redeemed, TicketRefusal):
        _refuse(service, redeemed.value)
    if redeemed.client_id:
        setattr(request.state, CLIENT_KEY_ID, redeemed.client_id)
    setattr(request.state, TICKETED_REQUEST, answer_request)


def key_digest_of(request: Request) -> str:
    """The digest of the key the request was admitted with; "" without one."""
    return str(getattr(request.state, KEY_DIGEST, ""))


def ticketed_request(request: Request) -> AnswerRequest | None:
    """The request a redeemed ticket was issued for, already checked; None without a ticket."""
    return getattr(request.state, TICKETED_REQUEST, None)


def _refuse(service: Service, reason: str) -> NoReturn:
    service.telemetry.auth_refused(reason)
    raise errors.QAServiceError(errors.UNAUTHORIZED)
