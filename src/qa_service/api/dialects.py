"""Each route's dialect: the shape its refusals are written in, and whether they count.

A route's class says it, where the route is declared, so a refusal needs no
path to know its dialect: the error handlers (error_handlers.py) find the
matched route in the request's scope. `/v1/...` speaks OpenAI's error shape
to OpenAI's clients; everything else speaks ours (docs/PROTOCOL.md). A
route that starts an answer counts each refusal as a refused answer
(`qa_requests_total{outcome="refused"}`), in every dialect.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from qa_service.core.errors import PublicError
from qa_service.wire import openai_chat


class NativeRoute(APIRoute):
    """Refused with our `{"error": {code, message, retryable}}`."""

    starts_answers: ClassVar[bool] = False

    @staticmethod
    def error_body(public: PublicError) -> dict[str, Any]:
        return public.as_dict()

    @classmethod
    def error_response(cls, public: PublicError) -> JSONResponse:
        headers = {}
        if public.retry_after_seconds is not None:
            # Whole seconds, rounded up: a client that waits less is refused again.
            headers["Retry-After"] = str(math.ceil(public.retry_after_seconds))
        elif public.status == 429:
            # A 429 always says when to ask again, even when the provider did not.
            headers["Retry-After"] = "1"
        if public.status == 401:
            # RFC 9110 requires a challenge on every 401; RFC 6750 names the scheme.
            headers["WWW-Authenticate"] = 'Bearer realm="qa-service"'
        body = {"error": cls.error_body(public)}
        return JSONResponse(body, status_code=public.status, headers=headers)


class NativeAnswerRoute(NativeRoute):
    """A native route that starts answers: /ai_write, and /api/chat (the AI SDK
    reads our error shape)."""

    starts_answers = True


class OpenAIRoute(NativeRoute):
    """Refused in OpenAI's error shape, which the official SDKs parse."""

    @staticmethod
    def error_body(public: PublicError) -> dict[str, Any]:
        return openai_chat.error_object(public)


class OpenAIAnswerRoute(OpenAIRoute):
    starts_answers = True


class OpenAIResponsesRoute(OpenAIRoute):
    """The Responses routes: OpenAI's shape, and its status for a malformed
    request, 400 (its SDKs raise BadRequestError), where ours is 422."""

    @classmethod
    def error_response(cls, public: PublicError) -> JSONResponse:
        if public.status == 422:
            public = dataclasses.replace(public, status=400)
        return super().error_response(public)


class OpenAIResponsesAnswerRoute(OpenAIResponsesRoute):
    starts_answers = True


def route_class_of(request: Request) -> type[NativeRoute]:
    """The dialect of the route the request matched (FastAPI leaves it in the
    scope, for a wrong method too); ours where none matched (an unknown path)."""
    route = request.scope.get("route")
    return type(route) if isinstance(route, NativeRoute) else NativeRoute
