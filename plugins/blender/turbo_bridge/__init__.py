"""Turbo Bridge for Blender: live SDXL-Turbo textures from a turbo-bridge daemon.

A Blender 4.2+ extension (see blender_manifest.toml); build the installable zip with
``python plugins/blender/build.py``.
"""

from __future__ import annotations

import bpy

from . import live, operators, panels, settings

_CLASSES = (settings.TurboBridgeLora, settings.TurboBridgeSettings, *operators.CLASSES, *panels.CLASSES)


@bpy.app.handlers.persistent
def _on_load_pre(*_args) -> None:
    live.disconnect()  # the settings belong to the file being closed


def register() -> None:
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.turbo_bridge = bpy.props.PointerProperty(type=settings.TurboBridgeSettings)
    bpy.app.handlers.load_pre.append(_on_load_pre)


def unregister() -> None:
    live.disconnect()  # stops the threads and the timer
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    del bpy.types.Scene.turbo_bridge
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
