"""Rendering on a cluster, as a value: which cluster (``ClusterSpec``) and who may be joined (the address policy).

A cluster's own ports (Ray's GCS, raylets, object stores) carry code and frames: whoever reaches
them runs code in the workers. So the daemon joins a cluster on loopback, or on a network the
operator named (``--cluster-allow``, like ``--osc-allow``), and only with the cluster's own token
authentication on (checked when joining: ``bridge.cluster.ray_cluster``). Stdlib only.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from .access import Network
from .errors import ConfigError

KINDS = ("ray",)
INSTALL_HINT = "pip install 'turbo-bridge[cluster]' (Ray 2.60)"


@dataclass(frozen=True)
class ClusterSpec:
    """``--cluster ray``: join ``address`` (``RAY_ADDRESS``, ``--cluster-address``), or start a local
    cluster of ``workers`` renderer workers (loopback only) when there is no address."""

    kind: str = "ray"
    address: str | None = None  # HOST:PORT of the cluster's head (Ray: its GCS)
    workers: int | None = None  # renderer workers; None: one per GPU of the joined cluster
    allow: tuple[Network, ...] = ()  # networks outside loopback the address may be in

    @property
    def local(self) -> bool:
        """The daemon starts the cluster itself (and stops it)."""
        return self.address is None

    @staticmethod
    def from_options(kind: str, address: str | None, workers: int | None, allow: Iterable[str] = ()) -> ClusterSpec:
        """Validate the command line's values; raises ``ConfigError`` naming the option."""
        if kind not in KINDS:
            raise ConfigError(f"--cluster takes {', '.join(KINDS)}, got {kind!r}")
        if importlib.util.find_spec("ray") is None:
            raise ConfigError(f"--cluster ray needs Ray: {INSTALL_HINT}")
        if workers is not None and not 1 <= workers <= 64:
            raise ConfigError(f"--cluster-workers takes 1 to 64 renderer workers, got {workers}")
        if address is None and workers is None:
            raise ConfigError("--cluster ray needs a cluster to join (RAY_ADDRESS or --cluster-address HOST:PORT) "
                              "or --cluster-workers N to start a local one")
        if address is not None:
            split_address(address)
        return ClusterSpec(kind, address, workers, tuple(_network(n) for v in allow for n in v.split(",") if n.strip()))


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) of a cluster's head; raises ``ConfigError``."""
    host, sep, port = address.strip().rpartition(":")
    host = host.strip("[]")
    if "://" in address or not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"a cluster address is HOST:PORT of its head (Ray's GCS, e.g. 10.0.0.5:6379; not ray:// "
                          f"or 'auto'), got {address[:100]!r}")
    return host, int(port)


def check_joinable(address: str, allow: tuple[Network, ...]) -> list[str]:
    """The head's addresses if every one is loopback or in ``allow``; else ``ConfigError`` (nothing is sent to it).

    Resolves a host name (blocking: call at start-up, before the event loop serves).
    """
    host, port = split_address(address)
    try:
        ips = sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})
    except OSError as exc:
        raise ConfigError(f"cluster address {address!r}: {host!r} does not resolve ({exc.strerror or exc})") from None
    for ip in ips:
        addr = ipaddress.ip_address(ip.split("%")[0])
        if not addr.is_loopback and not any(addr in network for network in allow):
            raise ConfigError(f"cluster address {address!r} ({ip}) is outside loopback: a cluster's ports run code "
                              f"unauthenticated to anyone who reaches them, so join one only on a private network "
                              f"named with --cluster-allow NETWORK (e.g. {_example(addr)})")
    return ips


def is_loopback(ips: Iterable[str]) -> bool:
    return all(ipaddress.ip_address(ip.split("%")[0]).is_loopback for ip in ips)


def _example(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return str(ipaddress.ip_network(f"{addr}/{24 if addr.version == 4 else 64}", strict=False))


def _network(text: str) -> Network:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ConfigError(f"--cluster-allow takes IP addresses or networks such as 10.0.0.0/24, got {text!r}") from None
