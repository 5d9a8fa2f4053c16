"""The panel's buttons: connect, disconnect, new seed, generate, use on material, keep."""

from __future__ import annotations

import random

import bpy

from . import datablocks, live
from ._bridge.client import check_channel, parse_address
from .settings import SEED_MAX, params_of


def _settings(context):
    return context.scene.turbo_bridge


def _live_image_name() -> str:
    session = live.current()
    return session.image_name if session is not None else datablocks.LIVE_IMAGE


class TURBO_BRIDGE_OT_connect(bpy.types.Operator):
    """Connect to the daemon and start receiving frames"""

    bl_idname = "turbo_bridge.connect"
    bl_label = "Connect"

    def execute(self, context):
        settings = _settings(context)
        try:
            address = parse_address(settings.address)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if not address.is_local and not bpy.app.online_access:
            self.report({"ERROR"}, f"{address.host} is not on this machine and online access is off "
                                   "(Preferences > System > Network > Allow Online Access)")
            return {"CANCELLED"}
        try:
            channel = check_channel(settings.channel)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        live.connect(address, settings.transport == "AUTO", params_of(settings) if settings.live else {}, channel)
        return {"FINISHED"}


class TURBO_BRIDGE_OT_disconnect(bpy.types.Operator):
    """Stop receiving frames (the live image keeps the last one)"""

    bl_idname = "turbo_bridge.disconnect"
    bl_label = "Disconnect"

    @classmethod
    def poll(cls, context):
        return live.current() is not None

    def execute(self, context):
        live.disconnect()
        return {"FINISHED"}


class TURBO_BRIDGE_OT_new_seed(bpy.types.Operator):
    """Pick a random seed (a new composition)"""

    bl_idname = "turbo_bridge.new_seed"
    bl_label = "New Seed"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        _settings(context).seed = random.randint(0, SEED_MAX)  # its update sends it when live
        return {"FINISHED"}


class TURBO_BRIDGE_OT_generate(bpy.types.Operator):
    """Send every setting to the daemon now"""

    bl_idname = "turbo_bridge.generate"
    bl_label = "Generate"

    @classmethod
    def poll(cls, context):
        return live.current() is not None

    def execute(self, context):
        live.submit(params_of(_settings(context)))
        return {"FINISHED"}


class TURBO_BRIDGE_OT_use_on_material(bpy.types.Operator):
    """Show the live image on the active object: an Image Texture node into its material's Base Color"""

    bl_idname = "turbo_bridge.use_on_material"
    bl_label = "Use on Active Material"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if not datablocks.can_have_material(context.active_object):
            cls.poll_message_set("Select an object that can have materials (a mesh, for example)")
            return False
        return True

    def execute(self, context):
        settings = _settings(context)
        settings.seamless = True  # a texture on a surface repeats: make its edges meet (the panel can undo it)
        image = bpy.data.images.get(_live_image_name()) or datablocks.live_image(settings.width, settings.height)
        material = datablocks.use_on_material(context.active_object, image)
        self.report({"INFO"}, f"{image.name!r} wired into {material.name!r}")
        return {"FINISHED"}


class TURBO_BRIDGE_OT_keep(bpy.types.Operator):
    """Copy the current frame into a new image packed into the .blend file"""

    bl_idname = "turbo_bridge.keep"
    bl_label = "Keep"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if bpy.data.images.get(_live_image_name()) is None:
            cls.poll_message_set("No frame yet: connect first")
            return False
        return True

    def execute(self, context):
        session = live.current()
        seed = session.applied.seed if session is not None and session.applied else _settings(context).seed
        kept = datablocks.keep_copy(bpy.data.images[_live_image_name()], f"Turbo Bridge seed {seed}")
        self.report({"INFO"}, f"Kept as {kept.name!r} (packed into the .blend)")
        return {"FINISHED"}


class TURBO_BRIDGE_OT_send_render(bpy.types.Operator):
    """Send the Render Result (the last render or viewport render) as the daemon's input image"""

    bl_idname = "turbo_bridge.send_render"
    bl_label = "Send Render as Input"

    @classmethod
    def poll(cls, context):
        return live.current() is not None

    def execute(self, context):
        if not live.send_render(context.scene):
            self.report({"ERROR"}, "Nothing rendered yet: render (F12) or use View > Viewport Render Image first")
            return {"CANCELLED"}
        return {"FINISHED"}


class TURBO_BRIDGE_OT_send_depth(bpy.types.Operator):
    """Send the last render's depth (Z pass: near white, far black) as the ControlNet's control image"""

    bl_idname = "turbo_bridge.send_depth"
    bl_label = "Send Depth as Control"

    @classmethod
    def poll(cls, context):
        return live.current() is not None

    def execute(self, context):
        layer = context.view_layer
        if not layer.use_pass_z:  # the render has no depth without it
            layer.use_pass_z = True
            self.report({"ERROR"}, f"The Z pass of view layer {layer.name!r} was off: switched on, render again (F12)")
            return {"CANCELLED"}
        why = live.send_depth(context.scene)
        if why:
            self.report({"ERROR"}, why)
            return {"CANCELLED"}
        return {"FINISHED"}


class TURBO_BRIDGE_OT_stop_input(bpy.types.Operator):
    """Drop the daemon's input image: back to text-to-image"""

    bl_idname = "turbo_bridge.stop_input"
    bl_label = "Stop Input"

    @classmethod
    def poll(cls, context):
        return live.current() is not None

    def execute(self, context):
        live.current().link.submit_input(None)
        return {"FINISHED"}


class TURBO_BRIDGE_OT_record(bpy.types.Operator):
    """Start or stop recording the daemon's frames into an MP4 in its --output-dir"""

    bl_idname = "turbo_bridge.record"
    bl_label = "Record"

    @classmethod
    def poll(cls, context):
        return live.current() is not None

    def execute(self, context):
        session = live.current()
        session.link.submit_record("stop" if session.recording else "start")
        return {"FINISHED"}


CLASSES = (TURBO_BRIDGE_OT_connect, TURBO_BRIDGE_OT_disconnect, TURBO_BRIDGE_OT_new_seed,
           TURBO_BRIDGE_OT_generate, TURBO_BRIDGE_OT_use_on_material, TURBO_BRIDGE_OT_keep,
           TURBO_BRIDGE_OT_send_render, TURBO_BRIDGE_OT_send_depth, TURBO_BRIDGE_OT_stop_input, TURBO_BRIDGE_OT_record)
