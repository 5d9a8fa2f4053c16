"""Binding the daemon's ports before the model loads, with one clear line when a port is taken.

A port already in use is then reported in a second, not after a minute of loading weights,
and the ports are ours while the model loads (nothing else can take them meanwhile).
"""

from __future__ import annotations

import errno
import logging
import os
import socket

from ..core.errors import BridgeError

log = logging.getLogger(__name__)

OSC_RECEIVE_BUFFER = 4 * 1024 * 1024  # absorbs bursts of small datagrams; the kernel caps it (rmem_max)


class PortInUseError(BridgeError):
    """The port is taken (by another daemon, or anything else)."""


def _bind(kind: str, option: str, host: str, port: int, type_: int) -> socket.socket:
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=type_, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise BridgeError(f"--host {host!r} does not resolve to an address: {exc.strerror}") from None
    sock = socket.socket(family, type_)
    try:
        if type_ == socket.SOCK_STREAM and os.name == "posix":
            # As asyncio does: a restart may rebind while old connections sit in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(f"{kind} port {port} on {host} is already in use (another turbo-bridge?); stop "
                                 f"that program or choose another port with {option} (0 picks a free one)") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise BridgeError(f"--host {host} is not an address of this machine ({exc.strerror})") from None
        if exc.errno == errno.EACCES:
            raise BridgeError(f"{kind} port {port} on {host}: permission denied (ports below 1024 need "
                              f"privileges); choose another with {option}") from None
        raise
    return sock


def bind_http(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) TCP socket for aiohttp's ``SockSite``."""
    return _bind("HTTP", "--http-port", host, port, socket.SOCK_STREAM)


def bind_osc(host: str, port: int) -> socket.socket:
    """A bound UDP socket with a large receive buffer, for ``create_datagram_endpoint(sock=...)``."""
    sock = _bind("OSC", "--osc-port", host, port, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, OSC_RECEIVE_BUFFER)
    except OSError as exc:  # not fatal: the default buffer works, it just drops sooner in a flood
        log.debug("could not enlarge the OSC receive buffer: %s", exc)
    sock.setblocking(False)
    return sock
