"""The daemon's address as typed in the docker, and the host names that mean this machine. No Krita calls here."""

from __future__ import annotations

import urllib.parse

LOOPBACK = {"127.0.0.1", "localhost", "::1"}  # a daemon here: its shared-memory segment may be ours to read


def normalize_url(text: str) -> str:
    """``host:port`` or ``http://host:port`` to a base URL; a clear error for anything else."""
    text = text.strip()
    if "://" not in text:
        text = "http://" + text
    url = urllib.parse.urlsplit(text)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"daemon address {text!r}: expected host:port, e.g. 127.0.0.1:8787")
    try:
        port = url.port
    except ValueError:
        raise ValueError(f"daemon address {text!r}: the port must be a number from 1 to 65535") from None
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    return f"{url.scheme}://{host}:{port or 8787}"
