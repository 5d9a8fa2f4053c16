"""Who may talk to the daemon and how much, as values: the access policy (``Access``: token, Host
names, CORS origins, OSC allow-list) and the HTTP server's limits (``HttpLimits``).

The CLI builds them (validated here, with errors that name the option); the front ends enforce
them (``bridge.frontends.security``, ``bridge.frontends.http.connections``). Stdlib only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import ConfigError, ValidationError

try:
    import resource
except ImportError:  # Windows: no file limit of this kind to respect
    resource = None

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MIN_TOKEN_CHARS = 16
RESERVED_FILES = 64  # descriptors kept for the model, shared memory, PNG files, executors, OSC
TOKEN_HINT = "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"


@dataclass(frozen=True)
class Access:
    """The daemon's access policy (all empty: loopback only, no token, no CORS)."""

    token: str | None = field(default=None, repr=False)
    allow_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    osc_allow: tuple[Network, ...] = ()

    def trusts_origin(self, origin: str) -> bool:
        """True for the ``--cors-origin`` origins (compared case-insensitively)."""
        return origin.lower() in self.cors_origins

    @staticmethod
    def from_options(token: str | None = None, allow_hosts: Iterable[str] = (), cors_origins: Iterable[str] = (),
                     osc_allow: Iterable[str] = ()) -> Access:
        """Validate the command line's values; raises ``ConfigError`` saying what to change."""
        return Access(_token(token), tuple(_host(h) for h in _split(allow_hosts)),
                      tuple(_origin(o) for o in _split(cors_origins)),
                      tuple(_network(n) for n in _split(osc_allow)))


def _split(values: Iterable[str]) -> list[str]:
    # Each option may be repeated and may hold a comma-separated list.
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _token(token: str | None) -> str | None:
    if token is None:
        return None
    if len(token) < MIN_TOKEN_CHARS or not token.isascii() or not token.isprintable() or " " in token:
        raise ConfigError(f"--token must be at least {MIN_TOKEN_CHARS} printable ASCII characters without "
                          f"spaces; make one with: {TOKEN_HINT}")
    return token


def _host(text: str) -> str:
    host = text.lower().strip("[]")
    if not host or any(c in host for c in "/@ ") or host.count(":") == 1:
        raise ConfigError(f"--allow-host takes a host name or address without scheme or port, got {text!r}")
    return host


def _origin(text: str) -> str:
    parts = urlsplit(text)
    if text == "*" or parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") \
            or parts.query or parts.fragment:
        raise ConfigError("--cors-origin takes an origin such as https://example.org:8080 (scheme, host, "
                          f"optional port; '*' is refused), got {text!r}")
    return f"{parts.scheme}://{parts.netloc}".lower()


def _network(text: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(f"--osc-allow takes IP addresses or networks such as 192.168.1.20 or 10.0.0.0/24, "
                          f"got {text!r}") from None


@dataclass(frozen=True)
class HttpLimits:
    """The HTTP server's limits (``--max-connections``, ``--max-connections-per-address``)."""

    head_timeout_s: float = 10.0  # request line and headers; also how long an idle keep-alive lasts
    body_timeout_s: float = 10.0  # the longest pause inside a request body
    # A body must arrive within body_grace_s plus one second per body_min_rate bytes received
    # (Apache's mod_reqtimeout rule): a small PATCH within seconds, 64 MiB at 64 KiB/s within 17 min.
    body_grace_s: float = 5.0
    body_min_rate: float = 64 * 1024  # bytes a second
    max_connections: int = 256
    max_per_address: int = 64
    max_streams_per_address: int = 32  # WebSockets, MJPEG streams, waiting long-polls; at most half the above
    # uploads over LARGE_BODY_BYTES (or of unknown length) read at once; WebSocket messages too
    max_large_bodies: int = 4
    ws_max_message_bytes: int | None = None  # None: the largest input image message (64 MiB and its header)
    ws_heartbeat_s: float = 20.0  # a WebSocket silent this long is pinged, and closed without a pong in half that
    log_interval_s: float = 60.0

    def __post_init__(self) -> None:
        for name, option in (("max_connections", " (--max-connections)"),
                             ("max_per_address", " (--max-connections-per-address)"), ("max_large_bodies", ""),
                             ("max_streams_per_address", "")):
            if getattr(self, name) < 1:
                raise ValidationError(name, f"{name}{option} must be at least 1, got {getattr(self, name)}")
        if self.ws_max_message_bytes is not None and self.ws_max_message_bytes < 1:
            raise ValidationError("ws_max_message_bytes", f"ws_max_message_bytes must be at least 1, "
                                                          f"got {self.ws_max_message_bytes}")
        if not self.body_min_rate > 0:
            raise ValidationError("body_min_rate", f"body_min_rate must be more than 0 bytes a second, "
                                                   f"got {self.body_min_rate}")
        for name in ("head_timeout_s", "body_timeout_s", "body_grace_s", "ws_heartbeat_s", "log_interval_s"):
            if not getattr(self, name) > 0:
                raise ValidationError(name, f"{name} must be more than 0 seconds, got {getattr(self, name)}")

    def body_deadline_s(self, received: int) -> float:
        """Seconds after its start by which a body must be in, given the bytes received so far."""
        return self.body_grace_s + received / self.body_min_rate

    def stream_caps(self) -> tuple[int, int]:
        """(in all, per address) of the long-lived requests: at most half of the connections each way,
        so that short requests (``/v1/health`` among them) always find room beside them."""
        return (max(1, self.connection_cap() // 2),
                max(1, min(self.max_streams_per_address, self.max_per_address // 2)))

    def connection_cap(self) -> int:
        """``max_connections``, lowered so that HTTP can never use up the process's file limit.

        asyncio accepts up to ``backlog`` connections in one go before any of them is seen (and an
        evicted one's descriptor closes a moment later), so HTTP may briefly hold twice the cap.
        """
        if resource is None:
            return self.max_connections
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, (soft - RESERVED_FILES) // 2))
