"""POST /stream-tickets: a single-use ticket for one GET /ai_write, for clients
that cannot send headers (EventSource). access/tickets.py says what one is."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from qa_service.api.asks import checked_request, read_ask_body
from qa_service.api.auth import key_digest_of
from qa_service.api.deps import ServiceDep
from qa_service.api.dialects import NativeRoute
from qa_service.api.guards import ISSUES_TICKETS
from qa_service.api.schemas import native as schemas

router = APIRouter(route_class=NativeRoute, tags=["answers"])


@router.post(
    "/stream-tickets",
    operation_id="issue_stream_ticket",
    summary="Issue a single-use ticket for one GET /ai_write",
    responses=schemas.TICKET_RESPONSES,
    openapi_extra={"requestBody": schemas.ASK_BODY},
    dependencies=ISSUES_TICKETS,
)
async def issue_stream_ticket(service: ServiceDep, request: Request) -> JSONResponse:
    """A ticket for the request in the body (the body of POST /ai_write), to be
    sent as `GET /ai_write?<the same fields>&ticket=<ticket>`."""
    answer_request = checked_request(service, await read_ask_body(service, request))
    ticket = await service.tickets.issue(key_digest_of(request), answer_request)
    return JSONResponse(
        {"ticket": ticket, "expires_in": service.tickets.ttl_seconds},
        # A credential: no cache may keep it (RFC 6749 asks the same of tokens).
        headers={"Cache-Control": "no-store"},
    )
