"""create_app(settings): the composition root. Builds a fresh app and its lifespan."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import Depends, FastAPI

from qa_service import __version__
from qa_service.access.admission import open_admission
from qa_service.access.keys import load_key_ring
from qa_service.access.tickets import StreamTickets
from qa_service.answers.cache.answer_cache import AnswerCache, CachePolicy, Charge
from qa_service.answers.cache.keys import ModelShape
from qa_service.answers.cache.ports import CacheStore
from qa_service.answers.chats import ChatAnswers
from qa_service.answers.readers import ReaderLimits
from qa_service.answers.registry import AnswerRegistry
from qa_service.answers.responses import StoredResponses
from qa_service.answers.run import RunTiming
from qa_service.api.deps import ProviderCapabilities, Service
from qa_service.api.error_handlers import install_error_handlers
from qa_service.api.hosts import refuse_other_hosts
from qa_service.api.openapi import install_openapi
from qa_service.api.openapi.facts import StartUpFacts
from qa_service.api.routes import ai_sdk, native, openai, ops, responses, tickets
from qa_service.api.routes.page import install_web
from qa_service.config import Settings
from qa_service.core.draining import Drain
from qa_service.core.errors import SHUTTING_DOWN
from qa_service.generation.demo import DEMO_FALLBACK_NOTICE, SCENARIO_CONFIG_KEY, SCENARIOS
from qa_service.generation.probe import build_probe
from qa_service.generation.prompt_library import PromptLibrary
from qa_service.generation.prompt_watch import open_prompt_watcher
from qa_service.generation.providers import open_chat_model
from qa_service.generation.writer import AIWriter, GenerationLimits
from qa_service.observability.logs import redactor
from qa_service.observability.spans import AnswerSpans, TracedRequests
from qa_service.observability.telemetry import Telemetry
from qa_service.observability.tracing import open_tracing
from qa_service.stores import open_stores

log = logging.getLogger(__name__)

# Ids from proxies (nginx's $request_id, uuids) are kept; anything else is
# replaced, so a log line's request_id is always a plain token.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


def create_app(settings: Settings) -> FastAPI:
    """A new app for `settings`. Prompts and key files are read now, so bad ones stop start-up."""
    prompts = PromptLibrary.load(settings.prompts_dir, settings.default_prompt)
    keys = load_key_ring(settings)
    telemetry = Telemetry(settings.resolved_provider, settings.resolved_model)
    # Off unless OTEL_* asks for it; the process's tracer and meter providers.
    tracing = open_tracing(telemetry.spans_dropped, redactor(settings.secret_values()))
    answer_spans = AnswerSpans() if tracing is not None else None
    capabilities = provider_capabilities(settings)
    # Begun by the server on SIGTERM (server.py); the app says so, and waits.
    drain = Drain()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if tracing is not None:
                # Last out: the answers' spans end first, then the rest are sent.
                stack.push_async_callback(anyio.to_thread.run_sync, tracing.shutdown)
            model = await stack.enter_async_context(open_chat_model(settings))
            stores = await stack.enter_async_context(open_stores(settings))
            store = stores.answers
            admission = await stack.enter_async_context(
                open_admission(settings, stores.limit_counters, stores.slots)
            )
            telemetry.watch_client_slots(lambda: admission.slots.held)
            telemetry.watch_event_loop(asyncio.get_running_loop())
            capacity = admission.capacity
            telemetry.watch_capacity(
                capacity.current_limit,
                lambda: capacity.loop_lag.lag,
            )
            capacity.on_refused = telemetry.over_capacity
            limits = GenerationLimits(
                first_piece_seconds=settings.upstream_read_timeout_seconds,
                idle_seconds=settings.upstream_idle_timeout_seconds,
                max_pieces=settings.max_tokens,
            )
            timing = RunTiming(
                close_seconds=settings.upstream_close_timeout_seconds,
                lease_seconds=settings.producer_lease_seconds,
                grace_seconds=settings.resume_grace_seconds,
            )
            if settings.prompts_watch:
                await stack.enter_async_context(open_prompt_watcher(prompts))
            registry = AnswerRegistry(
                store,
                AIWriter(model, prompts, limits),
                timing,
                observers=[telemetry] if answer_spans is None else [telemetry, answer_spans],
                reader_limits=ReaderLimits(
                    per_answer=settings.max_readers_per_answer,
                    per_client=settings.client_max_readers,
                ),
            )
            # Runs after the answers end: their readers' loops stop last.
            stack.push_async_callback(registry.readers.close)
            # Last in, first out: the answers end, then give back their places
            # and leave the cache's flights.
            stack.push_async_callback(admission.drain)
            cache = build_answer_cache(settings, registry, stores.cache, admission.charge)
            if cache is not None:
                stack.push_async_callback(cache.aclose)
            stack.push_async_callback(registry.abort_all, SHUTTING_DOWN)
            # A reader on another replica holds no connection here: the drain
            # waits for the answers themselves, not only for our connections.
            drain.hold_while(registry.count_generating)
            listener = asyncio.get_running_loop().create_task(registry.listen())
            stack.callback(listener.cancel)
            probe = (
                build_probe(model, settings.readyz_probe_ttl_seconds)
                if settings.readyz_probe
                else None
            )
            app.state.service = Service(
                settings,
                registry,
                prompts,
                telemetry,
                admission,
                StreamTickets(stores.tickets, settings.ticket_ttl_seconds),
                ChatAnswers(stores.chats, settings.resume_ttl_seconds),
                StoredResponses(stores.responses, settings.resume_ttl_seconds),
                capabilities,
                keys=keys,
                probe=probe,
                drain=drain,
                cache=cache,
                answer_spans=answer_spans,
            )
            stack.callback(setattr, app.state, "service", None)
            if settings.is_demo_fallback:
                log.warning(
                    "NO PROVIDER KEY SET: answering with the keyless DEMO provider. "
                    "Set OPENAI_API_KEY or GROQ_API_KEY (or QA_PROVIDER) for real answers."
                )
            # Port 0 means "any free port", which only uvicorn learns, later.
            where = f"; open {settings.local_url}/" if settings.port else ""
            log.info(
                "ready%s",
                where,
                extra={
                    "provider": settings.resolved_provider,
                    "model": settings.resolved_model,
                    "fallback_provider": settings.fallback_provider,
                    "fallback_model": settings.resolved_fallback_model,
                    "prompts": prompts.names(),
                    "answer_store": "redis" if settings.redis_url else "memory",
                    "api_keys": len(keys) if keys is not None else "off",
                    "allowed_hosts": ["localhost", "IP addresses", *settings.allowed_hosts],
                },
            )
            yield

    # FastAPI's /docs and /redoc load their scripts from a CDN, which the CSP
    # blocks and an offline machine cannot reach: web.py serves /docs instead.
    # Every route's first dependency: a Host that is not ours (DNS rebinding) is
    # refused before anything else, in the route's dialect (api/hosts.py).
    app = FastAPI(
        title="qa-service",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(refuse_other_hosts(settings.allowed_hosts))],
        # FastAPI's own tracing starts with any tracer provider, and its server
        # span records the query string: a GET /ai_write's question. Ours
        # (observability/tracing.py TracedRequests) leaves it out.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = None
    app.state.telemetry = telemetry
    app.state.drain = drain
    app.add_middleware(
        CorrelationIdMiddleware,
        header_name="X-Request-ID",
        validator=lambda value: bool(_REQUEST_ID.fullmatch(value)),
    )
    if tracing is not None:
        # Outermost: the server span holds the whole request, continuing the
        # caller's traceparent. No span per ASGI message: a stream sends thousands.
        app.add_middleware(
            TracedRequests,
            tracer_provider=tracing.tracer_provider,
            meter_provider=tracing.meter_provider,
            exclude_spans=["send", "receive"],
        )
    install_error_handlers(app)
    app.include_router(native.router)
    app.include_router(tickets.router)
    # Before the OpenAI chat surface: its last route catches every other /v1 path.
    app.include_router(responses.router)
    app.include_router(openai.router)
    app.include_router(ai_sdk.router)
    app.include_router(ops.router)
    install_web(app, settings)
    # Start-up's names: a prompt file added later is served, but /openapi.json
    # lists it only after a restart (docs/configuration.md, QA_PROMPTS_WATCH).
    facts = StartUpFacts(
        max_query_chars=settings.max_query_chars,
        max_history_messages=settings.max_history_messages,
        prompts=prompts.names(),
        scenarios=list(capabilities.scenarios),
    )
    surfaces = (native.components, ai_sdk.components, openai.components, responses.components)
    install_openapi(app, facts, surfaces, keys_on=settings.auth_enabled)
    return app


def build_answer_cache(
    settings: Settings, registry: AnswerRegistry, store: CacheStore, charge: Charge
) -> AnswerCache | None:
    """The answer cache, when QA_ANSWER_CACHE_TTL_SECONDS turns it on."""
    if settings.answer_cache_ttl_seconds <= 0:
        return None
    policy = CachePolicy(
        ttl_seconds=settings.answer_cache_ttl_seconds,
        global_scope=settings.answer_cache_scope == "global",
        paced_replay=settings.answer_cache_replay == "original",
        max_readers=settings.answer_cache_max_joiners,
        flight_seconds=settings.resume_ttl_seconds,
    )
    shape = ModelShape(
        settings.resolved_provider,
        settings.resolved_model,
        {"temperature": settings.temperature, "max_tokens": settings.max_tokens},
    )
    return AnswerCache(registry, store, policy, shape, charge)


def provider_capabilities(settings: Settings) -> ProviderCapabilities:
    """What the configured provider offers a request: scenarios on the demo provider
    only, and a notice while the demo stands in for a real one."""
    return ProviderCapabilities(
        scenarios=SCENARIOS if settings.resolved_provider == "demo" else (),
        scenario_config_key=SCENARIO_CONFIG_KEY,
        notice=DEMO_FALLBACK_NOTICE if settings.is_demo_fallback else None,
    )
