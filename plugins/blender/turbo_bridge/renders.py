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
    return save_render_result(scene, ".png", (("file_format", "PNG"), ("color_mode", "RGBA"), ("color_depth", "8")))


def save_render_result(scene, suffix: str, output: tuple[tuple[str, str], ...]) -> bytes | None:
    """The Render Result saved with the scene's output settings ``output`` (field, value) in
    order, as the file's bytes; None when nothing was rendered yet. The settings are put back in
    the same order (an earlier field, such as Blender 5.0's media type, decides what a later one
    may be); fields this Blender lacks are skipped."""
    image = bpy.data.images.get(RENDER_RESULT)
    if image is None:
        return None
    settings = scene.render.image_settings
    output = tuple((field, value) for field, value in output if hasattr(settings, field))
    saved = [(field, getattr(settings, field)) for field, _ in output]
    handle, path = tempfile.mkstemp(prefix="turbo-bridge-render-", suffix=suffix)
    os.close(handle)
    try:
        for field, value in output:
            setattr(settings, field, value)
        try:
            image.save_render(filepath=path, scene=scene)
        except RuntimeError:  # "does not have any image data": nothing rendered yet
            return None
        with open(path, "rb") as f:
            return f.read() or None
    finally:
        for field, value in saved:
            setattr(settings, field, value)
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
