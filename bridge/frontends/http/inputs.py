"""Input images for image-to-image: decoding what clients send, with limits that teach.

Three encodings on every interface: PNG, JPEG (via Pillow) and raw RGBA8 (width * height * 4
bytes, rows top-first, the size given alongside). The WebSocket's binary input message is a
fixed header (``WS_INPUT``) then the payload. Decoding and hashing take milliseconds for a large
image: callers run them off the event loop.
"""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps

from ...core.errors import ValidationError
from ...core.scene import InputImage

MAX_INPUT_SIDE = 4096
MAX_INPUT_BYTES = MAX_INPUT_SIDE * MAX_INPUT_SIDE * 4  # a raw RGBA image of the largest size
FORMATS = {"rgba": 0, "png": 1, "jpeg": 2}
CONTENT_TYPES = {"application/octet-stream": "rgba", "image/png": "png", "image/jpeg": "jpeg"}

# The WebSocket's binary input message (little-endian): magic, header size, format (FORMATS),
# reserved, width, height (both used by rgba only; 0 otherwise), payload bytes; then the payload.
WS_INPUT = struct.Struct("<4sHBBIII")
WS_INPUT_MAGIC = b"TBI1"
WS_CONTROL_MAGIC = b"TBC1"  # a control image: the same header, then the ControlNet's name (NUL-padded)
WS_CONTROL_NAME = 32
WS_STYLE_MAGIC = b"TBS1"  # the style image (IP-Adapter): the input message's header with this magic


def check_size(width: int, height: int, field: str = "input") -> None:
    if not (1 <= width <= MAX_INPUT_SIDE and 1 <= height <= MAX_INPUT_SIDE):
        raise ValidationError(field, f"{field} images must be 1 to {MAX_INPUT_SIDE} pixels a side, got "
                                       f"{width}x{height}; scale it down first (it is scaled to the frame size anyway)")


def decode_rgba(data: bytes, width: int, height: int, source: str, field: str = "input") -> InputImage:
    """Raw RGBA8 rows, top first."""
    check_size(width, height, field)
    if len(data) != width * height * 4:
        raise ValidationError(field, f"raw RGBA {field} of {width}x{height} must be {width * height * 4} bytes "
                                       f"(width * height * 4), got {len(data)}")
    pixels = np.frombuffer(data, np.uint8).reshape(height, width, 4)
    return InputImage.from_pixels(pixels, source)


def decode_image(data: bytes, kind: str, source: str, field: str = "input") -> InputImage:
    """A PNG or JPEG file's pixels as RGBA8; the size is checked before the pixels are decoded."""
    fmt = {"png": "PNG", "jpeg": "JPEG"}[kind]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[fmt]) as image:
                check_size(*image.size, field)
                pixels = _as_rgba8(image)
    except ValidationError:
        raise
    except Exception as exc:  # Pillow raises many types for a broken file: all mean "not a valid image"
        raise ValidationError(field, f"{field} is not a valid {fmt} image: {exc}") from None
    return InputImage.from_pixels(pixels, source)


def check_header(head: bytes, kind: str, field: str = "input") -> None:
    """Refuse a PNG or JPEG whose header already shows it too large, before the rest is received.

    Only the size is judged here (a truncated or odd header passes): decoding the whole file decides.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(head), formats=[{"png": "PNG", "jpeg": "JPEG"}[kind]]) as image:
                size = image.size
    except Image.DecompressionBombError as exc:  # far beyond the limit: Pillow refuses to open it at all
        raise ValidationError(field, f"{field} images must be 1 to {MAX_INPUT_SIDE} pixels a side: {exc}") from None
    except Exception:  # not enough of the file, or not an image: decode() says which
        return
    check_size(*size, field)


def _as_rgba8(image: Image.Image) -> np.ndarray:
    """As a photo viewer shows it: EXIF orientation applied, 16-bit greyscale scaled (Pillow would clip it)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale PNGs open as I;16 (or I): 0..65535 maps onto 0..255, rounded.
        wide = np.asarray(image).astype(np.uint32)
        grey = ((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        image = Image.fromarray(grey, "L")
    return np.asarray(image.convert("RGBA"))


def decode(data: bytes, kind: str, width: int | None, height: int | None, source: str,
           field: str = "input") -> InputImage:
    if kind == "rgba":
        if width is None or height is None:
            raise ValidationError(field, f"raw RGBA {field} needs its width and height "
                                         "(headers X-Width and X-Height over REST)")
        return decode_rgba(data, width, height, source, field)
    return decode_image(data, kind, source, field)


def pack_ws_input(kind: str, payload: bytes, width: int = 0, height: int = 0, control: str | None = None,
                  style: bool = False) -> bytes:
    """A binary WebSocket input message (what a client sends); with ``control``, that ControlNet's
    control image (magic TBC1, the name NUL-padded to 32 bytes after the header); with ``style``,
    the style image (magic TBS1)."""
    if control is None:
        return WS_INPUT.pack(WS_STYLE_MAGIC if style else WS_INPUT_MAGIC, WS_INPUT.size, FORMATS[kind], 0, width,
                             height, len(payload)) + payload
    name = control.encode().ljust(WS_CONTROL_NAME, b"\0")
    return WS_INPUT.pack(WS_CONTROL_MAGIC, WS_INPUT.size + WS_CONTROL_NAME, FORMATS[kind], 0, width, height,
                         len(payload)) + name + payload


def is_ws_control(message: bytes) -> bool:
    return message[:4] == WS_CONTROL_MAGIC


def is_ws_style(message: bytes) -> bool:
    return message[:4] == WS_STYLE_MAGIC


def decode_ws_input(message: bytes) -> tuple[str | None, InputImage]:
    """A binary WebSocket message: ``WS_INPUT`` header (TBC1: then a 32-byte control name), then a PNG,
    JPEG or raw RGBA payload. Returns (control name or None for the input image, the image)."""
    hint = ("binary messages are images: a 20-byte TBI1 header then the input image, or a TBC1 header, "
            "a 32-byte ControlNet name, then its control image (docs/reference/steering.md); send JSON text "
            "messages for everything else")
    control = is_ws_control(message)
    field = "control" if control else "style" if is_ws_style(message) else "input"
    if len(message) < WS_INPUT.size:
        raise ValidationError(field, hint)
    magic, header_size, code, _, width, height, length = WS_INPUT.unpack_from(message)
    least = WS_INPUT.size + (WS_CONTROL_NAME if control else 0)
    if magic not in (WS_INPUT_MAGIC, WS_CONTROL_MAGIC, WS_STYLE_MAGIC) or header_size < least \
            or code not in FORMATS.values() or len(message) < header_size:
        raise ValidationError(field, hint)
    name = message[WS_INPUT.size:least].rstrip(b"\0").decode("utf-8", "replace") if control else None
    payload = message[header_size:]
    if len(payload) != length:
        raise ValidationError(field, f"{field} message says {length} payload bytes, carries {len(payload)}")
    kind = next(fmt for fmt, value in FORMATS.items() if value == code)
    return name, decode(payload, kind, width, height, "websocket", field)
