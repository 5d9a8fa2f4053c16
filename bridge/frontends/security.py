"""Who may talk to the daemon: loopback by default, the network only with a token and an OSC allow-list.

``Access`` is the frozen policy the CLI builds; ``check_exposure`` refuses a non-loopback bind
without ``--token`` and ``--osc-allow``. ``middleware`` checks every HTTP request's Host header
(DNS rebinding) and bearer token (constant-time); ``add_cors_headers`` answers only the origins
given with ``--cors-origin``; ``SenderFilter`` admits OSC datagrams from loopback and the
allowed networks, and says what each sender may do (``OscTrust``: with a token set, loopback
alone may only change render parameters).
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
import logging
import math
import re
import time
from collections.abc import Callable, Iterable

from aiohttp import web

from ..core.access import TOKEN_HINT, Access, Network
from ..core.errors import ConfigError, ValidationError

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# Browsers cannot set headers on a WebSocket or an <img>/MJPEG request: these take the token
# as ?access_token= too (RFC 6750 section 2.3).
QUERY_TOKEN_PATHS = ("/v1/ws", "/v1/stream.mjpeg")


def _query_token_path(path: str) -> bool:
    """The streams, also a channel's (``/v1/channels/NAME/ws``), take the token in the query."""
    if path.startswith("/v1/channels/"):
        name, _, rest = path[len("/v1/channels/"):].partition("/")
        path = "/v1/" + rest if name else path
    return path in QUERY_TOKEN_PATHS
EXPOSED_HEADERS = "X-Frame-Seq, X-Params-Version, X-Render-Ms, X-Seed, X-Width, X-Height"



ACCESS = web.AppKey("access", Access)


def is_loopback(host: str) -> bool:
    """True for loopback addresses and the name ``localhost``."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def check_exposure(host: str, access: Access) -> None:
    """Refuse to listen beyond loopback without a token and an OSC allow-list."""
    if is_loopback(host):
        return
    missing = []
    if access.token is None:
        missing.append(f"--token SECRET (HTTP and WebSocket clients must send it as 'Authorization: Bearer "
                       f"SECRET'; make one with: {TOKEN_HINT})")
    if not access.osc_allow:
        missing.append("--osc-allow ADDRESS[/PREFIX],... (the hosts or networks that may send OSC, "
                       "e.g. 192.168.1.0/24)")
    if missing:
        raise ConfigError(f"--host {host} is not a loopback address, so other machines could reach the daemon; "
                          f"refusing to start without {' and '.join(missing)}")


def allowed_hosts(bind_host: str, access: Access) -> frozenset[str]:
    """Host header values (lower case, no port or brackets) this daemon answers to."""
    return frozenset({bind_host.strip("[]").lower(), *LOOPBACK_NAMES, *access.allow_hosts})


def host_of(header: str) -> str:
    """The host part of a Host header: ``[::1]:8787`` -> ``::1``, ``Example:80`` -> ``example``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _error(status: int, field: str | None, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response(ValidationError(field, message).to_json(), status=status, headers=headers)


def _bearer(request: web.Request) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if _query_token_path(request.path):
        return request.query.get("access_token")
    return None


# Credentials in what a log line may quote of a request: Authorization (and Proxy-Authorization)
# values after an optional scheme word, token query parameters, and whole Cookie headers.
_CREDENTIALS = re.compile(r"(?i)(authorization\s*:\s*(?:[a-z]+\s+(?=\S))?|[?&;](?:access_)?token=)"
                          r"[^\s&'\"\\]+")
_COOKIES = re.compile(r"(?i)(cookie\s*:\s*)[^'\"\\\r\n]+")


def scrub(text: str) -> str:
    """``text`` with bearer tokens, ``access_token`` values and cookies replaced by ``[redacted]``."""
    return _COOKIES.sub(r"\1[redacted]", _CREDENTIALS.sub(r"\1[redacted]", text))


def token_matches(given: str | None, token: str) -> bool:
    """Constant-time comparison (``hmac.compare_digest``), so timing does not leak the token."""
    return given is not None and hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode("utf-8"))


def middleware(bind_host: str, access: Access):
    """An aiohttp middleware: Host check, CORS preflight, then the bearer token (when one is set)."""
    hosts = allowed_hosts(bind_host, access)
    # On a wildcard bind clients use whatever address reaches this machine. A DNS-rebinding page
    # always sends a name it controls, never an IP literal, so IP literals are safe to accept there.
    any_ip = _is_wildcard(bind_host)
    refused = OncePerSender()

    @web.middleware
    async def guard(request: web.Request, handler):
        header = request.headers.get("Host")
        if header is not None:
            host = host_of(header)
            if host not in hosts and not (any_ip and _ip_literal(host)):
                refused("host", request.remote, "refused a request for Host %r from %s: not an allowed host",
                        header[:100], request.remote)
                return _error(403, "Host", f"Host {header[:100]!r} is not a name this daemon answers to (a guard "
                                           f"against DNS rebinding); allowed: {', '.join(sorted(hosts))}; add "
                                           "names with --allow-host")
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and origin is not None and access.trusts_origin(origin) \
                and "Access-Control-Request-Method" in request.headers:
            return web.Response(status=204, headers={
                "Access-Control-Allow-Methods": "GET, PATCH, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": "600",
            })  # the Allow-Origin header is added by add_cors_headers
        if access.token is not None and not _public(request.path) and not token_matches(_bearer(request), access.token):
            refused("token", request.remote, "refused %s %s from %s: missing or wrong token", request.method,
                    request.path[:100], request.remote)
            return _error(401, "Authorization", "this daemon requires a token: send 'Authorization: Bearer TOKEN'"
                          + (" or ?access_token=TOKEN" if _query_token_path(request.path) else ""),
                          headers={"WWW-Authenticate": 'Bearer realm="turbo-bridge"'})
        return await handler(request)

    return guard


def _public(path: str) -> bool:
    # The live page and its files hold no data and change nothing: a browser must be able to load
    # them before it can present a token (which the page then reads from its URL fragment).
    return path == "/" or path.startswith("/static/")


class OncePerSender:
    """Logs a refusal of each kind from each sender once per interval, truncated, with the count since.

    A flood must not flood the log: at most one line per (kind, sender) per ``interval_s``, each at
    most ``MAX_LINE`` characters, and at most ``max_senders`` senders tracked (past that, one line
    per interval says refusals are no longer logged one by one).
    """

    MAX_LINE = 300

    def __init__(self, interval_s: float = 60.0, max_senders: int = 1024,
                 clock: Callable[[], float] = time.monotonic, logger: logging.Logger | None = None) -> None:
        self.interval_s, self.max_senders, self._clock = interval_s, max_senders, clock
        self._log = logger or log
        self._seen: dict[tuple[str, str], list] = {}  # (kind, sender) -> [logged at, refusals since]
        self._overflow_logged = -math.inf

    def allow(self, kind: str, sender: str | None) -> tuple[bool, int]:
        """Whether to log this one now, and how many of its (kind, sender) were not logged since the last."""
        now = self._clock()
        key = (kind, sender or "?")
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.interval_s:
            entry[1] += 1
            return False, 0
        if entry is None and len(self._seen) >= self.max_senders:
            self._seen = {k: e for k, e in self._seen.items() if now - e[0] < self.interval_s}
            if len(self._seen) >= self.max_senders:
                if now - self._overflow_logged >= self.interval_s:
                    self._overflow_logged = now
                    self._log.warning("refusals from more than %d senders in %g s: no longer logged one by one",
                                      self.max_senders, self.interval_s)
                return False, 0
        since = entry[1] if entry is not None else 0
        self._seen[key] = [now, 0]
        return True, since

    def __call__(self, kind: str, sender: str | None, message: str, *args, level: int = logging.WARNING) -> None:
        allowed, since = self.allow(kind, sender)
        if not allowed:
            return
        text = message % args if args else message
        if len(text) > self.MAX_LINE:
            text = text[:self.MAX_LINE] + "..."
        self._log.log(level, "%s (logged once per sender per %g s%s)", text, self.interval_s,
                      f"; {since} more since" if since else "")


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: CORS headers for the ``--cors-origin`` origins only (never ``*``)."""
    origin = request.headers.get("Origin")
    if origin is not None and request.app[ACCESS].trusts_origin(origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        response.headers.add("Vary", "Origin")


class OscTrust(enum.Enum):
    """What an OSC sender may do."""

    NONE = "none"  # dropped without a reply
    PARAMS = "params"  # render parameters only (prompt, seed, guidance, blends, ...)
    ALL = "all"  # also what reads or writes files: LoRAs, recording


class SenderFilter:
    """Admits OSC datagrams from loopback and the allowed networks; counts and logs the others.

    OSC carries no token. So with ``--token`` set (``token_set``), loopback alone earns only
    ``PARAMS``: any local program could otherwise start a recording or make the daemon read
    LoRA files that HTTP clients need the token for. A sender named by ``--osc-allow`` (which
    may name 127.0.0.1) is trusted with ``ALL``."""

    def __init__(self, networks: Iterable[Network], token_set: bool = False):
        self.networks = tuple(networks)
        self.token_set = token_set
        self._refused = OncePerSender()

    def __call__(self, host: str) -> OscTrust:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return OscTrust.NONE
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket reports IPv4 senders as ::ffff:a.b.c.d
        if any(address in network for network in self.networks):
            return OscTrust.ALL
        if address.is_loopback:
            return OscTrust.PARAMS if self.token_set else OscTrust.ALL
        self._refused("osc", host, "OSC from %s ignored: not in --osc-allow", host)
        return OscTrust.NONE


def osc_sender(host: str) -> str:
    """The sender as ``--osc-allow`` would name it (an IPv4-mapped IPv6 sender as its IPv4 address)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)
