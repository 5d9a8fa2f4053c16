"""Depth as a control image: the Render Result's Z pass, normalised the way depth ControlNets
(and depth T2I-Adapters) were trained on it: near white, far black.

Blender has no Python access to a render pass's pixels. The Render Result is saved as an
uncompressed 32-bit multilayer OpenEXR (``renders.save_render_result``: the scene's output format
switched for the save and put back); ``read_exr_channel`` reads the Z channel back with
numpy (single-part files from Blender 4.x, multi-part from 5.0). ``normalise`` maps the nearest
surface to 1 and the farthest to 0; the background (no surface: Cycles' 1e10, EEVEE's far
clip) is black, as in a MiDaS depth map. The PNG is grey (R = G = B), top row first.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

DEPTH_SUFFIX = ".Depth.Z"  # the channel of the Z pass: "<ViewLayer>.Depth.Z"
BACKGROUND = 1e9  # a Z this far (or more) is no surface
_TYPES = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}


def _attributes(data: bytes, i: int) -> tuple[dict, int]:
    header = {}
    while data[i] != 0:
        end = data.index(b"\0", i)
        name = data[i:end].decode()
        type_end = data.index(b"\0", end + 1)
        kind = data[end + 1:type_end].decode()
        size = struct.unpack_from("<i", data, type_end + 1)[0]
        header[name] = (kind, data[type_end + 5:type_end + 5 + size])
        i = type_end + 5 + size
    return header, i + 1


def _channels(raw: bytes) -> list[tuple[str, int]]:
    out, i = [], 0
    while raw[i] != 0:
        end = raw.index(b"\0", i)
        out.append((raw[i:end].decode(), struct.unpack_from("<i", raw, end + 1)[0]))
        i = end + 17  # pixel type, pLinear + 3 reserved, x and y sampling
    return out


def read_exr_channel(data: bytes, suffix: str = DEPTH_SUFFIX) -> np.ndarray:
    """The first channel whose name ends with ``suffix``, as (H, W) float32, top row first.
    Uncompressed scanline files only (what ``EXR_OUTPUT`` writes); ValueError otherwise."""
    if data[:4] != b"v/1\x01":
        raise ValueError("not an OpenEXR file")
    flags = struct.unpack_from("<I", data, 4)[0]
    multipart, tiled = bool(flags & 0x1000), bool(flags & 0x200)
    if tiled:
        raise ValueError("tiled OpenEXR files are not read here")
    headers, i = [], 8
    while True:
        header, i = _attributes(data, i)
        headers.append(header)
        if not multipart or data[i] == 0:
            i += 1 if multipart else 0
            break
    tables = []
    for header in headers:
        x0, y0, x1, y1 = struct.unpack("<4i", header["dataWindow"][1])
        count = struct.unpack("<i", header["chunkCount"][1])[0] if "chunkCount" in header else y1 - y0 + 1
        tables.append(np.frombuffer(data, "<u8", count, i))
        i += 8 * count
    for part, header in enumerate(headers):
        if header["compression"][1] != b"\0":
            raise ValueError("compressed OpenEXR files are not read here (save with codec NONE)")
        channels = sorted(_channels(header["channels"][1]))
        names = [name for name, _ in channels]
        found = next((name for name in names if name.endswith(suffix)), None)
        if found is None:
            continue
        x0, y0, x1, y1 = struct.unpack("<4i", header["dataWindow"][1])
        width, height = x1 - x0 + 1, y1 - y0 + 1
        out = np.zeros((height, width), np.float32)
        skip = 4 if multipart else 0  # a multi-part chunk starts with its part number
        for offset in tables[part]:
            y = struct.unpack_from("<i", data, int(offset) + skip)[0]
            at = int(offset) + skip + 8
            for name, kind in channels:
                row = np.frombuffer(data, _TYPES[kind], width, at)
                if name == found:
                    out[y - y0] = row
                at += width * _TYPES[kind].itemsize
        return out
    raise ValueError(f"no {suffix.lstrip('.')} channel: render with the view layer's Z pass on")


def normalise(z: np.ndarray) -> np.ndarray:
    """Z to 8-bit grey: nearest surface 255, farthest 0, background 0 (H, W) uint8."""
    surface = np.isfinite(z) & (z < BACKGROUND)
    if not surface.any():
        return np.zeros(z.shape, np.uint8)
    near, far = float(z[surface].min()), float(z[surface].max())
    span = far - near
    scaled = np.ones(z.shape, np.float32) if span <= 0 else 1.0 - (z - near) / span
    return np.where(surface, np.rint(np.clip(scaled, 0.0, 1.0) * 255), 0).astype(np.uint8)


def grey_png(grey: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of (H, W) uint8, top row first (stdlib zlib, no image library)."""
    height, width = grey.shape
    rows = b"".join(b"\0" + grey[y].tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b""))


# Blender 5.0: multilayer is a media type (skipped where the field does not exist: 4.x).
EXR_OUTPUT = (("media_type", "MULTI_LAYER_IMAGE"), ("file_format", "OPEN_EXR_MULTILAYER"), ("exr_codec", "NONE"),
              ("color_depth", "32"))


def render_depth_png(scene) -> tuple[bytes | None, str]:
    """(PNG of the last render's depth, "") or (None, why not)."""
    from .renders import save_render_result

    exr = save_render_result(scene, ".exr", EXR_OUTPUT)
    if exr is None:
        return None, "Nothing rendered yet: render (F12) first"
    try:
        z = read_exr_channel(exr)
    except ValueError as exc:
        return None, f"No depth in the last render ({exc})"
    return grey_png(normalise(z)), ""
