"""Command line: `qa-service serve` runs the service, `qa-service ask` streams an answer."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import httpx
import uvicorn
from httpx_sse import connect_sse

from qa_service.config import ConfigError, load_settings
from qa_service.prompts import PromptError
from qa_service.server import (
    DrainingServer,
    guarded_http_protocol,
    log_open_file_limit,
    raise_open_file_limit,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qa-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service under uvicorn")
    serve.add_argument("--host", help="bind address (default: QA_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: QA_PORT or 8000)")

    ask = commands.add_parser("ask", help="stream an answer from a running service")
    ask.add_argument("question")
    ask.add_argument("--url", default="http://127.0.0.1:8000", help="the service's base URL")
    ask.add_argument("--prompt", help="a prompt name from GET /prompts")
    ask.add_argument("--scenario", help="a demo scenario (demo provider only)")

    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve_command(args.host, args.port)
    return ask_command(args.url, args.question, args.prompt, args.scenario)


def serve_command(host: str | None, port: int | None) -> int:
    # Imported here so `qa-service ask` starts without loading LangChain.
    from qa_service.app import create_app
    from qa_service.logs import configure_logging

    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.secret_values(), settings.log_format)
        app = create_app(settings)
    except (ConfigError, PromptError) as exc:
        print(f"qa-service: configuration error: {exc}", file=sys.stderr)
        return 2
    log_open_file_limit(*raise_open_file_limit())
    config = uvicorn.Config(
        app,
        host=host or settings.host,
        port=settings.port if port is None else port,
        loop="uvloop",
        http=guarded_http_protocol(
            settings.request_header_timeout_seconds, app.state.telemetry.connection_closed
        ),
        log_config=None,
        # The per-answer log line replaces access logs, whose URL carries the query text.
        access_log=False,
        # After the answers' own grace (see api.start_answer), a little more
        # for their final events to be delivered.
        timeout_graceful_shutdown=settings.shutdown_grace_seconds + 2,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    DrainingServer(config).run()
    return 0


def ask_command(url: str, question: str, prompt: str | None, scenario: str | None) -> int:
    body = {"query": question, "prompt": prompt, "scenario": scenario}
    payload = {key: value for key, value in body.items() if value is not None}
    timeout = httpx.Timeout(10.0, read=None)
    try:
        with (
            httpx.Client(timeout=timeout) as client,
            connect_sse(client, "POST", f"{url}/ai_write", json=payload) as source,
        ):
            if source.response.status_code != 200:
                source.response.read()
                return _report_error(source.response.json().get("error", {}))
            for sse in source.iter_sse():
                event = json.loads(sse.data)
                if "text" in event:
                    sys.stdout.write(event["text"])
                    sys.stdout.flush()
                elif "meta" in event and event["meta"].get("notice"):
                    print(f"note: {event['meta']['notice']}", file=sys.stderr)
                elif "done" in event:
                    sys.stdout.write("\n")
                    return 0
                elif "error" in event:
                    sys.stdout.write("\n")
                    return _report_error(event["error"])
    except httpx.HTTPError as exc:
        print(f"qa-service: cannot reach {url}: {type(exc).__name__}", file=sys.stderr)
        return 1
    print("qa-service: the stream ended without a done or error event", file=sys.stderr)
    return 1


def _report_error(error: dict[str, object]) -> int:
    retry = " (retryable)" if error.get("retryable") else ""
    print(f"qa-service: {error.get('code')}: {error.get('message')}{retry}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
