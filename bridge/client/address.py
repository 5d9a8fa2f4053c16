"""The daemon's address as a user types it into a plugin: checked, normalized, and whether it is this machine.

``parse_address`` takes ``host``, ``host:port``, ``http://host:port`` or ``https://...`` (IPv6 hosts in
brackets) and gives ``scheme://host:port``, port 8787 when none is given. Anything it would otherwise
have to drop or guess (a path, a login, port 0) is refused with what to type instead. Stdlib only:
plugins vendor this folder.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_PORT = 8787
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
SCHEMES = ("http", "https")


@dataclass(frozen=True)
class DaemonAddress:
    """A checked daemon address: ``url`` is ``scheme://host:port``, ``host`` is bare (IPv6 without brackets)."""

    url: str
    host: str

    @property
    def is_local(self) -> bool:
        """This machine (any loopback address, or ``localhost``): its shared-memory segment may be ours
        to read, and no network access is needed."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: not known to be this machine without a lookup, which may block
            return False


def parse_address(text: str) -> DaemonAddress:
    """The daemon address in ``text``; raises ValueError that says what is wrong and what to type."""
    text = text.strip()
    if not text:
        raise ValueError(f"the daemon address is empty; the default is {DEFAULT_URL}")
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower() if sep else "http"
    rest = rest if sep else text
    if scheme not in SCHEMES:
        # not echoed: the rest may hold 'user:password@'
        raise ValueError(f"the daemon address must start with http:// or https://, not {scheme}://")
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    if "@" in netloc:  # not echoed: the part before '@' may be a password
        raise ValueError("daemon address: drop the 'user:password@' part, the daemon has no login")
    host, port = _split_host_port(text, netloc)
    url = f"{scheme}://{_bracketed(host)}:{port}"
    if tail not in ("", "/"):
        raise ValueError(f"daemon address {text!r}: the address is the daemon's root; drop {tail} and use {url}")
    return DaemonAddress(url, host)


def _split_host_port(text: str, netloc: str) -> tuple[str, int]:
    """``host[:port]`` or ``[v6][:port]`` to the bare, lower-case host and the port (8787 if none)."""
    if netloc.startswith("["):
        inside, closed, after = netloc[1:].partition("]")
        if not closed:
            raise ValueError(f"daemon address {text!r}: the '[' of an IPv6 host has no closing ']'")
        try:
            ipaddress.IPv6Address(inside)
        except ValueError:
            raise ValueError(f"daemon address {text!r}: {inside!r} in brackets is not an IPv6 address") from None
        if after and not after.startswith(":"):
            raise ValueError(f"daemon address {text!r}: expected ':port' after ']', got {after!r}")
        host, port = inside, after[1:] if after else None
    elif netloc.count(":") > 1:
        raise ValueError(f"daemon address {text!r}: an IPv6 host goes in brackets, e.g. http://[::1]:{DEFAULT_PORT}")
    else:
        host, sep, port = netloc.partition(":")
        port = port if sep else None
    if not host:
        raise ValueError(f"daemon address {text!r}: no host; expected host:port, e.g. 127.0.0.1:{DEFAULT_PORT}")
    if any(c.isspace() for c in host):
        raise ValueError(f"daemon address {text!r}: the host {host!r} has a space in it")
    return host.lower(), _port(text, port)


def _port(text: str, port: str | None) -> int:
    if port is None:
        return DEFAULT_PORT
    if not port:
        raise ValueError(f"daemon address {text!r}: nothing after ':'; give a port from 1 to 65535, "
                         f"or leave out the ':' for {DEFAULT_PORT}")
    # isdigit alone takes other scripts' digits ('５'); int() would take '+5' and ' 5'
    number = int(port) if port.isascii() and port.isdigit() else -1
    if number == 0:
        raise ValueError(f"daemon address {text!r}: port 0 is no daemon's port (to a server it means 'any free "
                         f"port'); give 1 to 65535, or leave the port out for {DEFAULT_PORT}")
    if not 1 <= number <= 65535:
        raise ValueError(f"daemon address {text!r}: the port {port!r} is not a number from 1 to 65535")
    return number


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
