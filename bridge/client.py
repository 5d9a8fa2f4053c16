"""What every plugin imports: read frames from shared memory, send changes over OSC or HTTP.

Stdlib and numpy only (it runs inside Blender, Krita and TouchDesigner). It never unlinks the
daemon's segment, on any Python version.
"""

from __future__ import annotations

import json
import socket
import struct
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from . import layout


@dataclass(frozen=True)
class FrameInfo:
    """A frame copied out of shared memory (or fetched over HTTP)."""

    seq: int  # frames published so far, counting this one
    version: int
    seed: int
    width: int
    height: int
    render_ms: float
    published_ns: int
    pixels: np.ndarray  # H x W x 4 uint8


class ShmReader:
    """Tear-free reads of the daemon's frame segment.

    ``read()`` returns the newest frame, or None when nothing new was published since the last
    read (cheap: one 8-byte load). ``flip`` gives bottom-left row order (Blender,
    TouchDesigner); ``bgra`` swaps red and blue (Krita, Qt).
    """

    def __init__(self, name: str = "turbo-bridge", flip: bool = False, bgra: bool = False):
        self.name = name
        self.flip = flip
        self.bgra = bgra
        self._shm = layout.attach_untracked(name)
        self.geometry = layout.read_geometry(self._shm.buf)
        self._last_seq = -1
        self.retries = 0  # reads that raced a publish and were repeated

    def __enter__(self) -> "ShmReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._shm is not None:
            self._shm.close()  # close only: the segment belongs to the daemon
            self._shm = None

    @property
    def seq(self) -> int:
        """The segment's raw seq word (odd while publishing; frames published = seq // 2)."""
        return layout.SEQ.unpack_from(self._shm.buf, layout.SEQ_OFFSET)[0]

    def changed(self) -> bool:
        return self.seq != self._last_seq

    def read(self, force: bool = False, timeout: float = 1.0) -> FrameInfo | None:
        if self._shm is None:
            raise ValueError(f"ShmReader({self.name!r}) is closed")
        buf = self._shm.buf
        deadline = time.monotonic() + timeout
        while True:
            s1 = layout.SEQ.unpack_from(buf, layout.SEQ_OFFSET)[0]
            if s1 == 0 or (s1 == self._last_seq and not force):
                return None  # nothing published yet, or nothing new
            if s1 % 2 == 0:
                meta = layout.unpack_meta(buf)
                start = self.geometry.slot_offset(meta.slot)
                pixels = np.frombuffer(buf, np.uint8, count=meta.height * meta.stride, offset=start)
                pixels = pixels.reshape(meta.height, meta.width, 4).copy()
                s2 = layout.SEQ.unpack_from(buf, layout.SEQ_OFFSET)[0]
                if s1 == s2:
                    self._last_seq = s1
                    return FrameInfo(s1 // 2, meta.version, meta.seed, meta.width, meta.height,
                                     meta.render_ms, meta.published_ns, self._convert(pixels))
            self.retries += 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"shared memory {self.name!r}: no stable frame within {timeout} s")

    def _convert(self, pixels: np.ndarray) -> np.ndarray:
        if self.flip:
            pixels = pixels[::-1]
        if self.bgra:
            pixels = pixels[..., [2, 1, 0, 3]]
        return np.ascontiguousarray(pixels)


# -- OSC (a minimal encoder: plugins may not depend on python-osc) --------------------------
def _osc_string(text: str) -> bytes:
    data = text.encode("utf-8") + b"\x00"
    return data + b"\x00" * (-len(data) % 4)


def osc_message(address: str, *args: Any) -> bytes:
    """Encode an OSC message: str -> s, bool/int -> i (h above 32 bits), float -> f."""
    tags, payload = ",", b""
    for arg in args:
        if isinstance(arg, str):
            tags, payload = tags + "s", payload + _osc_string(arg)
        elif isinstance(arg, (bool, int)) and -2**31 <= int(arg) < 2**31:
            tags, payload = tags + "i", payload + struct.pack(">i", int(arg))
        elif isinstance(arg, int):
            tags, payload = tags + "h", payload + struct.pack(">q", arg)
        elif isinstance(arg, float):
            tags, payload = tags + "f", payload + struct.pack(">f", arg)
        else:
            raise TypeError(f"cannot send {type(arg).__name__} over OSC")
    return _osc_string(address) + _osc_string(tags) + payload


def osc_bundle(*messages: bytes) -> bytes:
    """An OSC bundle (timetag 'immediately'): the daemon applies it as one change."""
    body = b"".join(struct.pack(">i", len(m)) + m for m in messages)
    return _osc_string("#bundle") + struct.pack(">Q", 1) + body


def parse_osc_message(data: bytes) -> tuple[str, list[Any]]:
    """Decode a plain OSC message (the daemon's feedback: i, h, f, s arguments); ``ValueError`` if malformed."""
    try:
        return _parse_osc_message(data)
    except struct.error as exc:  # a truncated argument; struct.error is not a ValueError
        raise ValueError(f"truncated OSC message: {exc}") from None


def _parse_osc_message(data: bytes) -> tuple[str, list[Any]]:
    def string(pos: int) -> tuple[str, int]:
        end = data.index(b"\x00", pos)
        return data[pos:end].decode("utf-8"), end + 4 - (end % 4)

    address, pos = string(0)
    tags, pos = string(pos)
    args: list[Any] = []
    for tag in tags[1:]:
        if tag == "i":
            args.append(struct.unpack_from(">i", data, pos)[0]); pos += 4
        elif tag == "h":
            args.append(struct.unpack_from(">q", data, pos)[0]); pos += 8
        elif tag == "f":
            args.append(struct.unpack_from(">f", data, pos)[0]); pos += 4
        elif tag == "s":
            value, pos = string(pos)
            args.append(value)
        else:
            raise ValueError(f"unsupported OSC type tag {tag!r}")
    return address, args


class OscSender:
    """Sends changes to the daemon's OSC port over UDP (fire and forget)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9000):
        self.address = (host, port)
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)

    def send(self, address: str, *args: Any) -> None:
        self._sock.sendto(osc_message(address, *args), self.address)

    def send_params(self, changes: Mapping[str, Any]) -> None:
        """Several fields as one atomic change (``/bridge/params`` with a JSON object)."""
        self.send("/bridge/params", json.dumps(dict(changes)))

    def close(self) -> None:
        self._sock.close()


# -- HTTP ---------------------------------------------------------------------------------
class BridgeHTTPError(Exception):
    def __init__(self, status: int, field: str | None, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.field, self.message = status, field, message


class HttpClient:
    """Blocking REST calls (urllib). Call it from a worker thread inside a host application."""

    def __init__(self, base_url: str = "http://127.0.0.1:8787", timeout: float = 5.0, token: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token = token

    def _request(self, method: str, path: str, body: Any = None, timeout: float | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read())["error"]
                raise BridgeHTTPError(exc.code, error.get("field"), error.get("message", "")) from None
            except (ValueError, KeyError, TypeError):
                raise BridgeHTTPError(exc.code, None, str(exc.reason)) from None

    def health(self) -> dict:
        with self._request("GET", "/v1/health") as response:
            return json.load(response)

    def params(self) -> dict:
        with self._request("GET", "/v1/params") as response:
            return json.load(response)

    def patch(self, changes: Mapping[str, Any]) -> dict:
        """Apply a partial change; returns ``{"version": ..., "warnings": [...]}``."""
        with self._request("PATCH", "/v1/params", dict(changes)) as response:
            return json.load(response)

    def frame(self, after: int = 0, timeout: float = 10.0) -> FrameInfo | None:
        """Long-poll ``/v1/frame.rgba`` for a frame newer than ``after``; None on timeout."""
        body, h = self._frame("rgba", after, timeout)
        if body is None:
            return None
        width, height = int(h["X-Width"]), int(h["X-Height"])
        pixels = np.frombuffer(body, np.uint8).reshape(height, width, 4).copy()
        return FrameInfo(int(h["X-Frame-Seq"]), int(h["X-Params-Version"]), int(h["X-Seed"]), width, height,
                         float(h["X-Render-Ms"]), 0, pixels)

    def frame_png(self, after: int = 0, timeout: float = 10.0) -> tuple[bytes, int] | None:
        """Long-poll ``/v1/frame.png``: (PNG bytes, frame seq), or None on timeout.

        Decode with the host's own image loader (bpy, QImage, a Web Client DAT)."""
        body, h = self._frame("png", after, timeout)
        return None if body is None else (body, int(h["X-Frame-Seq"]))

    def _frame(self, fmt: str, after: int, timeout: float):
        path = f"/v1/frame.{fmt}?after={after}&timeout={timeout:g}"
        with self._request("GET", path, timeout=timeout + self.timeout) as response:
            if response.status == 204:
                return None, response.headers
            return response.read(), response.headers

