"""The panel's settings (stored per scene): address, transport and the daemon's parameters.

Editing a parameter while Live is on sends it at once (the prompt on every keystroke); the
worker thread merges unsent edits, so the daemon always gets the newest value.
"""

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from . import live

SEED_MAX = 2**31 - 1  # Blender's IntProperty is 32-bit; the daemon accepts up to 2**64 - 1
PARAMS = ("prompt", "negative_prompt", "seed", "guidance", "steps", "width", "height", "strength")


def params_of(settings) -> dict:
    """The daemon's parameters as the panel shows them."""
    return {**{name: getattr(settings, name) for name in PARAMS}, "tiling": tiling_of(settings)}


def tiling_of(settings) -> str:
    return "xy" if settings.seamless else "none"


def _send_tiling(settings, context) -> None:
    if settings.live:
        live.submit({"tiling": tiling_of(settings)})


def _send(name: str):
    def update(settings, context) -> None:
        if settings.live:
            live.submit({name: getattr(settings, name)})
    return update


def _send_size(name: str):
    def update(settings, context) -> None:
        value = getattr(settings, name)
        if value % 8:
            setattr(settings, name, value - value % 8)  # the daemon takes multiples of 8; re-enters
            return
        if settings.live:
            live.submit({name: value})
    return update


def _send_control_scale(settings, context) -> None:
    name = settings.control_name.strip()
    if settings.live and name:
        live.submit({"controls": {name: {"scale": settings.control_scale}}})


def _live_toggled(settings, context) -> None:
    if settings.live:
        live.submit(params_of(settings))


def _lora_changed(item, context) -> None:
    live.lora_changed(item, context)


class TurboBridgeLora(bpy.types.PropertyGroup):
    """One LoRA file of the daemon's --lora-dir (``name`` is its name there)."""

    weight: FloatProperty(name="Weight", default=0.0, min=-2.0, max=2.0, soft_min=-1.0, soft_max=1.5, step=5,
                          update=_lora_changed, description="How strongly this LoRA applies; 0 turns it off "
                                                            "(at most 4 on at once)")


class TurboBridgeSettings(bpy.types.PropertyGroup):
    address: StringProperty(
        name="Daemon", default="http://127.0.0.1:8787",
        description="Address of the turbo-bridge daemon (a local one shares frames through shared memory)")
    channel: StringProperty(
        name="Channel", default="main",
        description="The daemon channel of this live image: its own prompt, frames and segment "
                    "(main: the daemon's unprefixed stream; a new name is created on connect)")
    transport: EnumProperty(
        name="Frames", default="AUTO",
        items=[("AUTO", "Auto", "Shared memory for a daemon on this machine, HTTP otherwise"),
               ("HTTP", "HTTP", "Always fetch frames over HTTP (raw RGBA)")])
    prompt: StringProperty(name="Prompt", default="", options={"TEXTEDIT_UPDATE"}, update=_send("prompt"),
                           description="What to generate; sent as you type while Live is on")
    negative_prompt: StringProperty(name="Negative Prompt", default="", options={"TEXTEDIT_UPDATE"},
                                    update=_send("negative_prompt"),
                                    description="What to steer away from; used when Guidance is above 0")
    loras: CollectionProperty(type=TurboBridgeLora, name="LoRAs")
    seed: IntProperty(name="Seed", default=0, min=0, max=SEED_MAX, update=_send("seed"),
                      description="Same seed and settings give the same picture")
    guidance: FloatProperty(name="Guidance", default=0.0, min=0.0, max=30.0, soft_max=10.0, step=10,
                            update=_send("guidance"),
                            description="Classifier-free guidance; 0 is SDXL-Turbo's setting")
    steps: IntProperty(name="Steps", default=1, min=1, max=8, update=_send("steps"),
                       description="Denoising steps (1 is fastest)")
    width: IntProperty(name="Width", default=512, min=64, max=2048, step=8, subtype="PIXEL",
                       update=_send_size("width"), description="Frame width, a multiple of 8")
    height: IntProperty(name="Height", default=512, min=64, max=2048, step=8, subtype="PIXEL",
                        update=_send_size("height"), description="Frame height, a multiple of 8")
    live: BoolProperty(name="Live", default=True, update=_live_toggled,
                       description="Send every change at once; off: only when you press Generate")
    strength: FloatProperty(name="Strength", default=0.5, min=0.0, max=1.0, step=5, update=_send("strength"),
                            description="How far frames may move from the input image (0: the input is ignored)")
    seamless: BoolProperty(name="Seamless", default=False, update=_send_tiling,
                           description="Tileable frames: the picture wraps around left-right and top-bottom "
                                       "(switched on by Use on Active Material)")
    control_name: StringProperty(
        name="ControlNet", default="depth",
        description="The daemon's ControlNet (or T2I-Adapter) that takes the depth: its --controlnet NAME")
    control_scale: FloatProperty(name="Scale", default=1.0, min=0.0, max=2.0, step=5, update=_send_control_scale,
                                 description="How strongly the depth steers (0: off)")
    send_depths: BoolProperty(name="Send Each Depth", default=False,
                              description="After every finished render, send its depth (Z pass) as the "
                                          "ControlNet's control image")
    send_renders: BoolProperty(name="Send Each Render", default=False,
                               description="After every finished render (F12 or viewport render), send the "
                                           "Render Result as the daemon's input image")
