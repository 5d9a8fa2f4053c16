"""The Blender data the add-on touches: the live image, the material wiring, kept copies.

Main thread only (bpy is not thread-safe).

The live image is an 8-bit sRGB image, written through Blender's float RGBA pixel API. A
generated *float* image would be read as scene-linear whatever its colour space says (measured:
a 0.5 grey renders as 188 instead of 128 under the Standard view), so the daemon's sRGB bytes
would look washed out; an 8-bit image stores each value v/255 exactly and renders it as sRGB.
"""

from __future__ import annotations

import bpy
import numpy as np

LIVE_IMAGE = "Turbo Bridge"
NODE_NAME = "Turbo Bridge"


def live_image(width: int, height: int, name: str = LIVE_IMAGE) -> bpy.types.Image:
    """The image frames land in, created on first use and resized in place when needed."""
    image = bpy.data.images.get(name)
    if image is None or image.source != "GENERATED":
        image = bpy.data.images.new(name, width, height, alpha=True, float_buffer=False)
        image.colorspace_settings.name = "sRGB"
    elif tuple(image.size) != (width, height):
        image.scale(width, height)  # same datablock: every material using it follows
    return image


class PixelWriter:
    """Converts RGBA8 rows (bottom-first) to Blender's float RGBA and writes them in place.

    Keeps one float32 buffer per frame size, so a live frame allocates nothing."""

    def __init__(self) -> None:
        self._buffer = np.empty(0, np.float32)

    def write(self, image: bpy.types.Image, pixels: np.ndarray) -> None:
        if self._buffer.size != pixels.size:
            self._buffer = np.empty(pixels.size, np.float32)
        np.divide(pixels.reshape(-1), np.float32(255), out=self._buffer)
        image.pixels.foreach_set(self._buffer)
        image.update()


def keep_copy(image: bpy.types.Image, name: str) -> bpy.types.Image:
    """A new image with the current pixels, packed into the .blend and kept without users."""
    width, height = image.size
    buffer = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(buffer)
    kept = bpy.data.images.new(name, width, height, alpha=True, float_buffer=False)
    kept.colorspace_settings.name = image.colorspace_settings.name
    kept.pixels.foreach_set(buffer)
    kept.update()
    kept.pack()  # an edited generated image packs as PNG
    kept.use_fake_user = True  # a .blend drops images nobody uses; a kept frame must stay
    return kept


def can_have_material(obj: bpy.types.Object | None) -> bool:
    return obj is not None and obj.data is not None and hasattr(obj.data, "materials")


def use_on_material(obj: bpy.types.Object, image: bpy.types.Image) -> bpy.types.Material:
    """Wire ``image`` into the Base Color of ``obj``'s active material (creating what is missing).

    Idempotent: a second call reuses the add-on's Image Texture node."""
    material = obj.active_material
    if material is None:
        material = bpy.data.materials.new(LIVE_IMAGE)
        if obj.material_slots:
            obj.active_material = material
        else:
            obj.data.materials.append(material)
    if bpy.app.version < (5, 0, 0) and not material.use_nodes:
        material.use_nodes = True  # Blender 5 materials always use nodes
    nodes, links = material.node_tree.nodes, material.node_tree.links
    shader = _principled(nodes, links)
    texture = nodes.get(NODE_NAME)
    if texture is None or texture.bl_idname != "ShaderNodeTexImage":
        texture = nodes.new("ShaderNodeTexImage")
        texture.name = texture.label = NODE_NAME
        texture.location = (shader.location.x - 320, shader.location.y)
    texture.image = image
    links.new(texture.outputs["Color"], shader.inputs["Base Color"])
    nodes.active = texture  # texture paint and the image editor follow the active node
    return material


def _principled(nodes, links):
    """The material's Principled BSDF; one wired to a new output if it has none."""
    for node in nodes:
        if node.bl_idname == "ShaderNodeBsdfPrincipled":
            return node
    shader = nodes.new("ShaderNodeBsdfPrincipled")
    output = next((n for n in nodes if n.bl_idname == "ShaderNodeOutputMaterial"), None)
    if output is None:
        output = nodes.new("ShaderNodeOutputMaterial")
        output.location = (shader.location.x + 300, shader.location.y)
    links.new(shader.outputs["BSDF"], output.inputs["Surface"])
    return shader
