"""Declaring a route for GET and HEAD at once, as the native and operations routes do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter

from qa_service.api.schemas.models import Responses
from qa_service.api.schemas.native import without_bodies

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def get_and_head(
    router: APIRouter,
    path: str,
    *,
    responses: Responses,
    head_responses: Responses | None = None,
    summary: str,
    **options: Any,
) -> Callable[[Endpoint], Endpoint]:
    """`@router.get`, plus HEAD as its own route: one route with both methods
    would give the two OpenAPI operations the same operationId. HEAD's
    responses are GET's without bodies, unless `head_responses` says more."""

    def register(endpoint: Endpoint) -> Endpoint:
        for method in ("GET", "HEAD"):
            head = method == "HEAD"
            router.add_api_route(
                path,
                endpoint,
                methods=[method],
                operation_id=f"{endpoint.__name__}_{method.lower()}",
                summary=f"{summary} (headers only)" if head else summary,
                responses=(head_responses or without_bodies(responses)) if head else responses,
                **options,
            )
        return endpoint

    return register
