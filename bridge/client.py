"""What every plugin imports: read frames from shared memory, send changes over OSC or HTTP,
send input images (HTTP, or an input segment of its own that the daemon polls).

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

    def latest_meta(self) -> layout.Meta | None:
        """The newest frame's metadata (seed, version, size, render ms) without copying pixels;
        None while nothing is published or a publish is in progress."""
        buf = self._shm.buf
        s1 = layout.SEQ.unpack_from(buf, layout.SEQ_OFFSET)[0]
        if s1 == 0 or s1 % 2:
            return None
        meta = layout.unpack_meta(buf)
        return meta if layout.SEQ.unpack_from(buf, layout.SEQ_OFFSET)[0] == s1 else None

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


def to_rgba8(pixels: np.ndarray, flip: bool = False, bgra: bool = False) -> np.ndarray:
    """Host pixels to the protocol's RGBA8, rows top-first (C-contiguous).

    Takes uint8 or float (0-1) pixels with 3 or 4 channels; ``flip``: the rows are bottom-first
    (Blender, TouchDesigner); ``bgra``: the bytes are B, G, R, A (Krita, Qt).
    """
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(f"expected H x W x 3 or 4 pixels, got shape {pixels.shape}")
    if pixels.dtype != np.uint8:
        pixels = (np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if bgra:
        pixels = pixels[..., [2, 1, 0, 3] if pixels.shape[2] == 4 else [2, 1, 0]]
    if pixels.shape[2] == 3:
        pixels = np.concatenate([pixels, np.full(pixels.shape[:2] + (1,), 255, np.uint8)], axis=2)
    return np.ascontiguousarray(pixels[::-1] if flip else pixels)


class ShmInputWriter:
    """An input segment (layout v1) that this process creates, writes and unlinks on ``close``.

    ``write`` publishes one input frame (tear-free, like the daemon's frames); the daemon polls
    the segment once told its name (``HttpClient.attach_input(name)``). Frames larger than the
    segment's maximum size are refused: scale them first.
    """

    def __init__(self, name: str, max_width: int, max_height: int, slot_count: int = 3):
        self.name = name
        self.geometry = layout.Geometry(slot_count, max_width, max_height)
        self._shm = layout.Segment(name, create=self.geometry.total_bytes)
        layout.write_geometry(self._shm.buf, self.geometry)
        self._seq = 0
        self._slot = slot_count - 1

    def __enter__(self) -> "ShmInputWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write(self, pixels: np.ndarray, flip: bool = False, bgra: bool = False, tag: int = 0) -> int:
        """Publish one frame (see ``to_rgba8`` for what it takes); ``tag`` lands in the seed field.
        Returns the frames written so far."""
        if self._shm is None:
            raise ValueError(f"ShmInputWriter({self.name!r}) is closed")
        rgba = to_rgba8(pixels, flip, bgra)
        height, width = rgba.shape[:2]
        self._slot = (self._slot + 1) % self.geometry.slot_count
        meta = layout.Meta(self._slot, width, height, width * 4, self._seq // 2 + 1, tag, time.time_ns(), 0.0)
        self._seq = layout.publish(self._shm.buf, self.geometry, self._seq, meta, rgba)
        return self._seq // 2

    def close(self) -> None:
        if self._shm is not None:
            shm, self._shm = self._shm, None
            shm.close()
            shm.unlink()


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

    def _request(self, method: str, path: str, body: Any = None, timeout: float | None = None,
                 data: bytes | None = None, headers: Mapping[str, str] | None = None):
        if body is not None:
            data, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=dict(headers or {}))
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

    def put_input(self, image: bytes | np.ndarray, flip: bool = False, bgra: bool = False) -> dict:
        """Send the input image for image-to-image: PNG or JPEG bytes, or pixels (``to_rgba8``)
        sent raw. Returns ``{"digest", "width", "height", "changed", "active", "version"}``."""
        if isinstance(image, np.ndarray):
            rgba = to_rgba8(image, flip, bgra)
            headers = {"Content-Type": "application/octet-stream", "X-Width": str(rgba.shape[1]),
                       "X-Height": str(rgba.shape[0])}
            data = rgba.tobytes()
        else:
            data = bytes(image)
            headers = {"Content-Type": "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"}
        with self._request("PUT", "/v1/input", data=data, headers=headers) as response:
            return json.load(response)

    def attach_input(self, shm_name: str) -> dict:
        """Have the daemon poll this client's input segment (``ShmInputWriter``)."""
        with self._request("PUT", "/v1/input", {"shm": shm_name}) as response:
            return json.load(response)

    def clear_input(self) -> dict:
        """Drop the input (and detach a segment): back to text-to-image."""
        with self._request("DELETE", "/v1/input") as response:
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

