"""Command line: the entry point of every command (``main``: the parser, exit codes) and the logging
it configures. ``serve``'s options and the config they make: ``cli_serve``; the measuring commands,
``bench`` and ``latency``: ``cli_tools``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from pathlib import Path

from .cli_serve import add_serve, config_from_args
from .cli_tools import add_bench, add_latency, run_bench_command, run_latency_command
from .config import drop_empty_home
from .core.access import HttpLimits
from .core.errors import BridgeError, ConfigError, ValidationError
from .frontends.security import OncePerSender, scrub

log = logging.getLogger("bridge")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="turbo-bridge", description="Real-time SDXL-Turbo frames for creative tools.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="how much is logged (to stderr); given before the command")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve(sub)
    add_bench(sub)
    add_latency(sub)
    return parser


def _error_kind(message: str) -> str:
    """What aiohttp says was wrong, without the bytes it quotes: a header value (an ``Authorization``
    token after a NUL, say) is never logged, also where aiohttp leaves out the header's name."""
    kind = re.split(r"[:'\"\n]", message, maxsplit=1)[0]
    return " ".join(kind.split())[:120] or "unreadable request"


class _MalformedRequestsInOneLine(logging.Filter):
    """aiohttp logs a malformed request (answered 400) with a traceback and the offending line: on a
    network, anyone can send one. One line instead, once per sender per interval, credentials scrubbed."""

    def __init__(self, interval_s: float = HttpLimits.log_interval_s):
        super().__init__()
        self._throttle = OncePerSender(interval_s, logger=logging.getLogger("aiohttp.server"))

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and type(exc).__module__ == "aiohttp.http_exceptions":
            sender = str(record.args[0]) if isinstance(record.args, tuple) and record.args else None
            allowed, muted = self._throttle.allow("malformed", sender)
            if not allowed:
                return False
            detail = _error_kind(str(exc.message))
            more = f"; {muted} more from this sender not logged" if muted else ""
            record.msg, record.args = f"{record.getMessage()}: malformed HTTP, answered 400 ({detail}){more}", ()
            record.exc_info, record.levelno, record.levelname = None, logging.WARNING, "WARNING"
        record.msg, record.args = scrub(record.getMessage()), ()  # never log a token the request carried
        return True


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("aiohttp.server").addFilter(_MalformedRequestsInOneLine())
    if drop_empty_home():
        log.warning("HOME is empty: treated as unset (home %s)", Path("~").expanduser())
    try:
        if args.command == "serve":
            from .app import serve

            asyncio.run(serve(config_from_args(args)))
        elif args.command == "bench":
            run_bench_command(args)
        elif args.command == "latency":
            run_latency_command(args, lambda serve_args: build_parser().parse_args(["serve", *serve_args]))
    except ValidationError as exc:
        log.error("%s", exc.message)
        return 2
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except BridgeError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:  # a port in use, a folder we may not write
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
