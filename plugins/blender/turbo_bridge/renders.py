"""Live input from Blender: the Render Result as the daemon's input image (image-to-image).

The Render Result holds the last F12 render, or the last viewport render (View > Viewport
Render Image), as the image editor shows it (view transform applied). It is saved as an 8-bit
PNG (the scene's output format is set for the save and put back) and handed to the link's
worker thread, which sends it with ``PUT /v1/input``. With "Send Each Render" on, a
``render_complete`` handler only raises a flag; the timer sends on the main thread.
"""

from __future__ import annotations

import os
import tempfile

import bpy

RENDER_RESULT = "Render Result"
_rendered = False


def render_result_png(scene) -> bytes | None:
    """The Render Result as PNG bytes, or None when nothing was rendered yet."""
    image = bpy.data.images.get(RENDER_RESULT)
    if image is None:
        return None
    settings = scene.render.image_settings
    saved = (settings.file_format, settings.color_mode, settings.color_depth)
    handle, path = tempfile.mkstemp(prefix="turbo-bridge-input-", suffix=".png")
    os.close(handle)
    try:
        settings.file_format = "PNG"
        settings.color_mode, settings.color_depth = "RGBA", "8"
        try:
            image.save_render(filepath=path, scene=scene)
        except RuntimeError:  # "does not have any image data": nothing rendered yet
            return None
        with open(path, "rb") as f:
            return f.read() or None
    finally:
        settings.file_format = saved[0]
        settings.color_mode, settings.color_depth = saved[1], saved[2]
        os.remove(path)


def _on_render_complete(*args) -> None:
    global _rendered
    _rendered = True


def watch(on: bool) -> None:
    """Listen for finished renders (while connected)."""
    handlers = bpy.app.handlers.render_complete
    if on and _on_render_complete not in handlers:
        handlers.append(_on_render_complete)
    elif not on and _on_render_complete in handlers:
        handlers.remove(_on_render_complete)


def take_rendered() -> bool:
    """True once after each finished render."""
    global _rendered
    rendered, _rendered = _rendered, False
    return rendered
