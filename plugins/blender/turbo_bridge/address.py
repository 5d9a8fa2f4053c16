"""The daemon's address as typed in the sidebar, checked when Connect is pressed; no bpy here.

Whether it is this machine decides if shared memory may be tried, and if Blender's online
access is needed.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass


@dataclass(frozen=True)
class Address:
    """A validated daemon address."""

    url: str
    host: str

    @property
    def is_local(self) -> bool:
        """Loopback: shared memory may work, and no online access is needed."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_address(text: str) -> Address:
    """``127.0.0.1:8787``, ``http://host:port`` or ``https://...``; raises ValueError that says why."""
    text = text.strip()
    if not text:
        raise ValueError("the daemon address is empty (the default is http://127.0.0.1:8787)")
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"the daemon address must start with http:// or https://, not {parts.scheme}://")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"the port in {text!r} is not a number from 0 to 65535") from None
    if not parts.hostname:
        raise ValueError(f"no host in the daemon address {text!r}")
    netloc = parts.netloc if port else f"{parts.netloc}:8787"
    return Address(f"{parts.scheme}://{netloc}", parts.hostname)
