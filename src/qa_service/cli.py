"""Command line: `qa-service serve` runs the service, `qa-service ask` streams an answer,
`qa-service hash-key` writes a line of QA_API_KEYS_FILE."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qa_service.config import Settings

# The exit code when the port cannot be had: uvicorn's own when its bind fails.
STARTUP_FAILED = 3

# Everything else is imported by the command that needs it: `qa-service ask`
# must start without loading LangChain (issue 10: `ask --help` took 5 s).


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qa-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service under uvicorn")
    serve.add_argument("--host", help="bind address (default: QA_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: QA_PORT or 8000)")
    # One worker of several (QA_WORKERS), started by the supervisor with its socket.
    serve.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)

    ask = commands.add_parser(
        "ask",
        help="stream an answer from a running service",
        description="Stream an answer to stdout; notes and a closing summary go to stderr.",
    )
    ask.add_argument("question")
    ask.add_argument(
        "--url",
        help="the service's base URL (default: from --host/--port, QA_HOST/QA_PORT or .env, "
        "as `serve` reads them)",
    )
    ask.add_argument("--host", help="where `serve --host` listens (instead of --url)")
    ask.add_argument("--port", type=int, help="where `serve --port` listens (instead of --url)")
    ask.add_argument("--prompt", help="a prompt name from GET /prompts")
    ask.add_argument("--scenario", help="a demo scenario (demo provider only)")
    ask.add_argument(
        "--json", action="store_true", help="print every event as one JSON line on stdout"
    )

    hash_key = commands.add_parser(
        "hash-key",
        help="print the QA_API_KEYS_FILE line for an API key read from stdin",
        description="Reads one API key from stdin (without echo at a terminal) and prints "
        "`sha256:<hex> [label]`, a line for QA_API_KEYS_FILE. The key itself is not printed.",
    )
    hash_key.add_argument("--label", help="a name for the key's client (A-Z a-z 0-9 . _ -)")

    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve_command(args.host, args.port, listen_fd=args.listen_fd)
    if args.command == "hash-key":
        return hash_key_command(args.label)
    if args.url is not None and (args.host is not None or args.port is not None):
        ask.error("give --url, or --host/--port, not both")
    return ask_command(
        args.url,
        args.question,
        args.prompt,
        args.scenario,
        json_lines=args.json,
        address=(args.host, args.port),
    )


def serve_command(host: str | None, port: int | None, *, listen_fd: int | None = None) -> int:
    # Imported here so `qa-service ask` starts without loading LangChain.
    import socket

    import uvicorn

    from qa_service.app import create_app
    from qa_service.config import ConfigError, load_settings
    from qa_service.generation.prompts import PromptError
    from qa_service.observability.logs import configure_logging
    from qa_service.server import (
        DrainingServer,
        guarded_http_protocol,
        log_open_file_limit,
        raise_open_file_limit,
    )
    from qa_service.supervisor import PortClaimError, supervise

    try:
        # The flags win over QA_HOST / QA_PORT, and the app's ready log says where.
        settings = load_settings().with_address(host, port)
        configure_logging(settings.log_level, settings.secret_values(), settings.log_format)
        if settings.workers > 1 and listen_fd is None:
            if settings.port == 0:
                # Each worker's socket is bound to the port: port 0 would give each its own.
                raise ConfigError("QA_WORKERS needs a fixed QA_PORT (or --port), not 0")
            check_answer_store(settings)
            return supervise(settings.workers, settings.host, settings.port)
        app = create_app(settings)
        check_answer_store(settings)
    except (ConfigError, PromptError) as exc:
        print(f"qa-service: configuration error: {exc}", file=sys.stderr)
        return 2
    except PortClaimError as exc:
        print(f"qa-service: {exc}", file=sys.stderr)
        return STARTUP_FAILED
    log_open_file_limit(*raise_open_file_limit(), settings)
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
        # The whole stop (server.py's drain, then uvicorn's own wait): the
        # answers' grace (answers/connection.py), and a little more for their
        # final events to be delivered.
        timeout_graceful_shutdown=settings.shutdown_grace_seconds + 2,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    # A worker listens on the socket its supervisor opened (supervisor.py says why).
    sockets = None if listen_fd is None else [socket.socket(fileno=listen_fd)]
    DrainingServer(config, app.state.drain).run(sockets=sockets)
    return 0


def hash_key_command(label: str | None) -> int:
    from getpass import getpass

    from qa_service.access.keys import LABEL, hashed_key_line
    from qa_service.config import API_KEY_CHARS, MIN_API_KEY_CHARS

    if label is not None and not LABEL.fullmatch(label):
        print("qa-service: --label takes 1 to 64 of A-Z a-z 0-9 . _ -", file=sys.stderr)
        return 2
    key = getpass("API key: ") if sys.stdin.isatty() else sys.stdin.readline()
    key = key.strip()
    if len(key) < MIN_API_KEY_CHARS or not API_KEY_CHARS.fullmatch(key):
        print(
            f"qa-service: a key is at least {MIN_API_KEY_CHARS} of A-Z a-z 0-9 - . _ ~ + / =; "
            'make one with: python3 -c "import secrets; print(secrets.token_urlsafe(32))"',
            file=sys.stderr,
        )
        return 2
    print(hashed_key_line(key, label))
    return 0


def check_answer_store(settings: Settings) -> None:
    """Stop start-up with one line when QA_REDIS_URL is set but Redis cannot be reached."""
    if settings.redis_url is None:
        return
    from qa_service.config import ConfigError
    from qa_service.stores.redis_client import unreachable

    problem = unreachable(settings.redis_url.get_secret_value())
    if problem is not None:
        raise ConfigError(f"QA_REDIS_URL: {problem}")


def ask_command(
    url: str | None,
    question: str,
    prompt: str | None,
    scenario: str | None,
    *,
    json_lines: bool = False,
    address: tuple[str | None, int | None] = (None, None),
) -> int:
    from qa_service.cli_ask import CONFIG_ERROR, ask, default_url
    from qa_service.config import ConfigError

    if url is None:
        try:
            url = default_url(*address)
        except ConfigError as exc:
            print(f"qa-service: configuration error: {exc}", file=sys.stderr)
            return CONFIG_ERROR
    return ask(url, question, prompt, scenario, json_lines=json_lines)


if __name__ == "__main__":
    sys.exit(main())
