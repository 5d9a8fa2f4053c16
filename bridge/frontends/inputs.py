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

from ..core.errors import ValidationError
from ..core.scene import InputImage

MAX_INPUT_SIDE = 4096
MAX_INPUT_BYTES = MAX_INPUT_SIDE * MAX_INPUT_SIDE * 4  # a raw RGBA image of the largest size
FORMATS = {"rgba": 0, "png": 1, "jpeg": 2}
CONTENT_TYPES = {"application/octet-stream": "rgba", "image/png": "png", "image/jpeg": "jpeg"}

# The WebSocket's binary input message (little-endian): magic, header size, format (FORMATS),
# reserved, width, height (both used by rgba only; 0 otherwise), payload bytes; then the payload.
WS_INPUT = struct.Struct("<4sHBBIII")
WS_INPUT_MAGIC = b"TBI1"


def check_size(width: int, height: int) -> None:
    if not (1 <= width <= MAX_INPUT_SIDE and 1 <= height <= MAX_INPUT_SIDE):
        raise ValidationError("input", f"input images must be 1 to {MAX_INPUT_SIDE} pixels a side, got "
                                       f"{width}x{height}; scale it down first (it is scaled to the frame size anyway)")


def decode_rgba(data: bytes, width: int, height: int, source: str) -> InputImage:
    """Raw RGBA8 rows, top first."""
    check_size(width, height)
    if len(data) != width * height * 4:
        raise ValidationError("input", f"raw RGBA input of {width}x{height} must be {width * height * 4} bytes "
                                       f"(width * height * 4), got {len(data)}")
    pixels = np.frombuffer(data, np.uint8).reshape(height, width, 4)
    return InputImage.from_pixels(pixels, source)


def decode_image(data: bytes, kind: str, source: str) -> InputImage:
    """A PNG or JPEG file's pixels as RGBA8; the size is checked before the pixels are decoded."""
    fmt = {"png": "PNG", "jpeg": "JPEG"}[kind]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[fmt]) as image:
                check_size(*image.size)
                pixels = _as_rgba8(image)
    except ValidationError:
        raise
    except Exception as exc:  # Pillow raises many types for a broken file: all mean "not a valid image"
        raise ValidationError("input", f"input is not a valid {fmt} image: {exc}") from None
    return InputImage.from_pixels(pixels, source)


def check_header(head: bytes, kind: str) -> None:
    """Refuse a PNG or JPEG whose header already shows it too large, before the rest is received.

    Only the size is judged here (a truncated or odd header passes): decoding the whole file decides.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(head), formats=[{"png": "PNG", "jpeg": "JPEG"}[kind]]) as image:
                size = image.size
    except Image.DecompressionBombError as exc:  # far beyond the limit: Pillow refuses to open it at all
        raise ValidationError("input", f"input images must be 1 to {MAX_INPUT_SIDE} pixels a side: {exc}") from None
    except Exception:  # not enough of the file, or not an image: decode() says which
        return
    check_size(*size)


def _as_rgba8(image: Image.Image) -> np.ndarray:
    """As a photo viewer shows it: EXIF orientation applied, 16-bit greyscale scaled (Pillow would clip it)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale PNGs open as I;16 (or I): 0..65535 maps onto 0..255, rounded.
        wide = np.asarray(image).astype(np.uint32)
        grey = ((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        image = Image.fromarray(grey, "L")
    return np.asarray(image.convert("RGBA"))


def decode(data: bytes, kind: str, width: int | None, height: int | None, source: str) -> InputImage:
    if kind == "rgba":
        if width is None or height is None:
            raise ValidationError("input", "raw RGBA input needs its width and height "
                                           "(headers X-Width and X-Height over REST)")
        return decode_rgba(data, width, height, source)
    return decode_image(data, kind, source)


def pack_ws_input(kind: str, payload: bytes, width: int = 0, height: int = 0) -> bytes:
    """A binary WebSocket input message (what a client sends)."""
    return WS_INPUT.pack(WS_INPUT_MAGIC, WS_INPUT.size, FORMATS[kind], 0, width, height, len(payload)) + payload


def decode_ws_input(message: bytes) -> InputImage:
    """A binary WebSocket message: ``WS_INPUT`` header, then a PNG, JPEG or raw RGBA payload."""
    hint = ("binary messages are input images: a 20-byte TBI1 header then the image (README, "
            "\"Live input\"); send JSON text messages for everything else")
    if len(message) < WS_INPUT.size:
        raise ValidationError("input", hint)
    magic, header_size, code, _, width, height, length = WS_INPUT.unpack_from(message)
    if magic != WS_INPUT_MAGIC or header_size < WS_INPUT.size or code not in FORMATS.values():
        raise ValidationError("input", hint)
    payload = message[header_size:]
    if len(payload) != length:
        raise ValidationError("input", f"input message says {length} payload bytes, carries {len(payload)}")
    kind = next(name for name, value in FORMATS.items() if value == code)
    return decode(payload, kind, width, height, "websocket")
