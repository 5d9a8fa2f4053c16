"""The sidebar panel (N panel, "Turbo Bridge" tab) in the 3D Viewport and the Image Editor."""

from __future__ import annotations

import bpy

from . import live


class _TurboBridgePanel:
    bl_label = "Turbo Bridge"
    bl_region_type = "UI"
    bl_category = "Turbo Bridge"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.turbo_bridge
        session = live.current()

        col = layout.column(align=True)
        col.prop(settings, "address", text="")
        col.prop(settings, "channel")
        col.prop(settings, "transport", expand=True)
        if session is None:
            col.operator("turbo_bridge.connect", icon="LINKED")
            layout.label(text="Not connected", icon="UNLINKED")
        else:
            col.operator("turbo_bridge.disconnect", icon="UNLINKED")
            icon = "CHECKMARK" if session.connected else "ERROR"
            for line in _wrap(session.status, 40):
                layout.label(text=line, icon=icon)
                icon = "BLANK1"

        col = layout.column(align=True)
        col.prop(settings, "prompt", text="")
        col.prop(settings, "negative_prompt", text="Negative")
        row = col.row(align=True)
        row.prop(settings, "seed")
        row.operator("turbo_bridge.new_seed", text="", icon="FILE_REFRESH")
        col.prop(settings, "guidance")
        col.prop(settings, "steps")
        row = col.row(align=True)
        row.prop(settings, "width")
        row.prop(settings, "height")
        row = layout.row(align=True)
        row.prop(settings, "live", toggle=True, icon="PLAY" if settings.live else "PAUSE")
        row.operator("turbo_bridge.generate", icon="RENDER_STILL")

        if settings.loras:
            col = layout.column(align=True)
            col.label(text="LoRAs (0 = off, at most 4 on)")
            for item in settings.loras:
                col.prop(item, "weight", text=item.name, slider=True)

        col = layout.column(align=True)
        col.label(text="Input (image-to-image)")
        col.prop(settings, "strength", slider=True)
        row = col.row(align=True)
        row.operator("turbo_bridge.send_render", icon="RENDER_RESULT")
        row.operator("turbo_bridge.stop_input", text="", icon="X")
        col.prop(settings, "send_renders", toggle=True)

        col = layout.column(align=True)
        col.label(text="Control (depth)")
        row = col.row(align=True)
        row.prop(settings, "control_name", text="")
        row.prop(settings, "control_scale", slider=True)
        col.operator("turbo_bridge.send_depth", icon="MOD_OPACITY")
        col.prop(settings, "send_depths", toggle=True)

        col = layout.column(align=True)
        col.prop(settings, "seamless", toggle=True, icon="MOD_ARRAY")
        recording = session is not None and session.recording
        col.operator("turbo_bridge.record", text="Stop Recording" if recording else "Record",
                     icon="SNAP_FACE" if recording else "REC", depress=recording)
        col.operator("turbo_bridge.use_on_material", icon="MATERIAL")
        col.operator("turbo_bridge.keep", icon="PACKAGE")
        if session is not None and session.applied is not None:
            a = session.applied
            layout.label(text=f"frame {a.seq}: {a.width}x{a.height}, seed {a.seed}")
            layout.label(text=f"render {a.render_ms:.0f} ms, applied in {a.main_thread_ms:.1f} ms")


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + [line] if line else lines


class TURBO_BRIDGE_PT_view3d(_TurboBridgePanel, bpy.types.Panel):
    bl_space_type = "VIEW_3D"


class TURBO_BRIDGE_PT_image_editor(_TurboBridgePanel, bpy.types.Panel):
    bl_space_type = "IMAGE_EDITOR"


CLASSES = (TURBO_BRIDGE_PT_view3d, TURBO_BRIDGE_PT_image_editor)
