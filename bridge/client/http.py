"""Blocking REST calls to the daemon (urllib), for a host application's worker thread."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

import numpy as np

from .channels import MAIN, check_channel, http_path
from .shm import FrameInfo, to_rgba8


class BridgeHTTPError(Exception):
    def __init__(self, status: int, field: str | None, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.field, self.message = status, field, message


class HttpClient:
    """Blocking REST calls (urllib). Call it from a worker thread inside a host application."""

    def __init__(self, base_url: str = "http://127.0.0.1:8787", timeout: float = 5.0, token: str | None = None,
                 channel: str = MAIN):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token = token
        self.channel = check_channel(channel)  # per-stream routes go to /v1/channels/NAME/... but for main

    def _request(self, method: str, path: str, body: Any = None, timeout: float | None = None,
                 data: bytes | None = None, headers: Mapping[str, str] | None = None):
        if body is not None:
            data, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
        request = urllib.request.Request(self.base_url + http_path(path, self.channel), data=data, method=method,
                                         headers=dict(headers or {}))
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

    def loras(self) -> dict:
        """``GET /v1/loras``: the LoRA files (name, targets, rank, size) and the active weights."""
        with self._request("GET", "/v1/loras") as response:
            return json.load(response)

    def patch(self, changes: Mapping[str, Any]) -> dict:
        """Apply a partial change; returns ``{"version": ..., "warnings": [...]}``."""
        with self._request("PATCH", "/v1/params", dict(changes)) as response:
            return json.load(response)

    def put_input(self, image: bytes | np.ndarray, flip: bool = False, bgra: bool = False,
                  control: str | None = None, style: bool = False) -> dict:
        """Send the input image for image-to-image (or, with ``control``, that ControlNet's control
        image; with ``style``, the IP-Adapter's style image): PNG or JPEG bytes, or pixels
        (``to_rgba8``) sent raw. Returns ``{"digest", "width", "height", "changed", "active", "version"}``."""
        if isinstance(image, np.ndarray):
            rgba = to_rgba8(image, flip, bgra)
            headers = {"Content-Type": "application/octet-stream", "X-Width": str(rgba.shape[1]),
                       "X-Height": str(rgba.shape[0])}
            data = rgba.tobytes()
        else:
            data = bytes(image)
            headers = {"Content-Type": "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"}
        with self._request("PUT", _image_path(control, style), data=data, headers=headers) as response:
            return json.load(response)

    def attach_input(self, shm_name: str, control: str | None = None, style: bool = False) -> dict:
        """Have the daemon poll this client's input segment (``ShmInputWriter``); with ``control``, as
        that ControlNet's control image; with ``style``, as the style image."""
        with self._request("PUT", _image_path(control, style), {"shm": shm_name}) as response:
            return json.load(response)

    def clear_input(self, control: str | None = None, style: bool = False) -> dict:
        """Drop the input (and detach a segment): back to text-to-image; with ``control``, that
        ControlNet's control image; with ``style``, the style image."""
        with self._request("DELETE", _image_path(control, style)) as response:
            return json.load(response)

    def record(self, action: str | None = None) -> dict:
        """``POST /v1/record`` with ``action`` "start" or "stop", or (None) ``GET /v1/record``: the recorder's state."""
        body = None if action is None else {"action": action}
        with self._request("GET" if action is None else "POST", "/v1/record", body) as response:
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

    def frame_of_version(self, version: int, timeout: float = 120.0) -> FrameInfo:
        """The first frame of params ``version`` or newer, long-polling until ``timeout`` seconds
        (an empty long-poll only means nothing new yet); raises ``TimeoutError`` after that."""
        deadline, after = time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            frame = self.frame(after=after, timeout=min(10.0, max(0.1, deadline - time.monotonic())))
            if frame is not None and frame.version >= version:
                return frame
            after = frame.seq if frame is not None else after
        raise TimeoutError(f"no frame of params version {version} within {timeout:g} s")

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


def _image_path(control: str | None, style: bool = False) -> str:
    """The input image's route, a ControlNet's control image route, or the style image's."""
    if style:
        return "/v1/style"
    return "/v1/input" if control is None else f"/v1/control/{urllib.parse.quote(control, safe='')}"
