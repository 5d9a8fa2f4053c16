"""The PUT of an image slot (``/v1/input``, ``/v1/control/NAME``, ``/v1/style``): an image body (PNG,
JPEG, raw RGBA with ``X-Width``/``X-Height``), or JSON naming a source to attach.

A body is refused as early as its headers allow (a raw image of the wrong length unread, an image
too large by its header after its first bytes), and large bodies are read a few at a time.
"""

from __future__ import annotations

import functools
import re

from aiohttp import web

from ...core.errors import ValidationError
from ...texshare.link import KINDS, Unavailable
from . import inputs
from .bodies import LARGE_BODY_BYTES, read_body
from .image_feed import ImageFeed
from .rest import error_response, read_json

HEADER_INT = re.compile(r"[0-9]{1,6}")


async def put_image(request: web.Request, service: ImageFeed) -> web.Response:
    """A PUT of an image slot: an image body, or JSON naming a source: ``{"shm": NAME}`` (a client's
    segment), ``{"spout": NAME}`` or ``{"syphon": NAME}`` (another program's sender)."""
    field = service.field
    if request.content_type == "application/json":
        value = await read_json(request)
        if isinstance(value, web.Response):
            return value
        if not isinstance(value, dict) or len(value) != 1 or not set(value) <= {"shm", *KINDS}:
            return error_response(400, None, f'a JSON {field} request names one source: {{"shm": NAME}} (poll that '
                                             'shared-memory segment), {"spout": NAME} or {"syphon": NAME} '
                                             "(receive that program's sender)")
        (kind, name), = value.items()
        if kind == "shm":
            return web.json_response(await service.attach(name))
        try:
            return web.json_response(await service.attach_texture(kind, name))
        except Unavailable as exc:  # this daemon's machine cannot: not the request's fault
            return error_response(409, kind, str(exc))
    kind = inputs.CONTENT_TYPES.get(request.content_type)
    if kind is None:
        return error_response(415, field, f"Content-Type must be one of {', '.join(inputs.CONTENT_TYPES)} "
                                          f"(or application/json with a segment name), got {request.content_type!r}")
    width, height = _header_int(request, "X-Width"), _header_int(request, "X-Height")
    body = await _read_input(request, kind, width, height, field)
    if isinstance(body, web.Response):
        return body
    return web.json_response(await service.put(body, kind, width, height, "rest"))


def _header_int(request: web.Request, name: str) -> int | None:
    text = request.headers.get(name)
    if text is None:
        return None
    # ASCII digits only, and few: int() takes '١' and refuses '²' or 5,000 digits with a ValueError.
    if not HEADER_INT.fullmatch(text.strip()):
        raise ValidationError(name, f"{name} must be a whole number of pixels from 1 to {inputs.MAX_INPUT_SIDE} "
                                    f"(ASCII digits), got {text[:20]!r}")
    return int(text)


async def _read_input(request: web.Request, kind: str, width: int | None, height: int | None,
                      field: str = "input") -> bytes | web.Response:
    if kind == "rgba" and width is not None and height is not None:
        inputs.check_size(width, height, field)
        expected = width * height * 4
        if request.content_length is not None and request.content_length != expected:  # refused unread
            return error_response(400, field, f"raw RGBA {field} of {width}x{height} must be {expected} bytes "
                                              f"(width * height * 4), Content-Length says {request.content_length}")
    too_big = f"{field} must be at most {inputs.MAX_INPUT_BYTES} bytes ({inputs.MAX_INPUT_SIDE} px a side as raw RGBA)"
    # the size known early
    check = None if kind == "rgba" else functools.partial(inputs.check_header, kind=kind, field=field)
    # Large (or of unknown length): a few at a time, so clients together cannot buffer gigabytes.
    large = request.content_length is None or request.content_length > LARGE_BODY_BYTES
    return await read_body(request, inputs.MAX_INPUT_BYTES, field, too_big, check, large=large)
