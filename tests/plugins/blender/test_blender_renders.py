"""The Blender extension's images in Blender's own use: materials, renders, Keep.

Real Blender (the ``bpy`` wheel, Cycles on the CPU) against a real daemon process; fixtures in
conftest.py, helpers in blender_harness.py.
"""

from __future__ import annotations

import numpy as np
import pytest

try:
    import bpy
except ImportError as exc:  # not installed (Python other than 3.11), or a shared library missing
    pytest.skip(f"bpy cannot be imported ({exc}); the tests need Blender as a Python module: "
                "pip install bpy==5.0.1 on Python 3.11", allow_module_level=True)

from blender_harness import frame_current, http, image_floats, pump, settings, with_nodes  # noqa: E402


# -- material, keep, render ----------------------------------------------------------------------
def test_use_on_active_material_wires_an_image_texture(ext, blender_daemon):
    settings(blender_daemon.url, seed=8)
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: frame_current(ext, blender_daemon))
    image = bpy.data.images[ext.live.current().image_name]
    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.active_object
    assert cube.active_material is None

    for _ in range(2):  # a second press reuses the node
        assert bpy.ops.turbo_bridge.use_on_material() == {"FINISHED"}
    material = cube.active_material
    textures = [n for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeTexImage"]
    assert len(textures) == 1 and textures[0].image == image
    base = next(n for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled").inputs["Base Color"]
    assert base.is_linked and base.links[0].from_node == textures[0] and base.links[0].from_socket.name == "Color"
    output = next(n for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeOutputMaterial")
    assert output.inputs["Surface"].links[0].from_node.bl_idname == "ShaderNodeBsdfPrincipled"

    bpy.ops.object.camera_add()
    assert not bpy.ops.turbo_bridge.use_on_material.poll()  # a camera has no material


def test_render_shows_the_frame_in_srgb_the_right_way_up(ext, blender_daemon, tmp_path):
    """An emission plane seen straight on renders back the frame's own 8-bit values."""
    bpy.ops.wm.read_homefile(use_empty=True)
    settings(blender_daemon.url, seed=13)
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: frame_current(ext, blender_daemon))
    image = bpy.data.images[ext.live.current().image_name]
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_plane_add(size=2)
    plane = bpy.context.active_object
    material = with_nodes(bpy.data.materials.new("emit"))
    plane.data.materials.append(material)
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    texture = nodes.new("ShaderNodeTexImage")
    texture.image, texture.interpolation = image, "Closest"
    emission, output = nodes.new("ShaderNodeEmission"), nodes.new("ShaderNodeOutputMaterial")
    links.new(texture.outputs["Color"], emission.inputs["Color"])
    links.new(emission.outputs["Emission"], output.inputs["Surface"])
    bpy.ops.object.camera_add(location=(0, 0, 1))
    camera = scene.camera = bpy.context.active_object
    camera.data.type, camera.data.ortho_scale = "ORTHO", 2.0
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples, scene.cycles.use_denoising = "CPU", 1, False
    scene.cycles.pixel_filter_type, scene.cycles.filter_width = "BOX", 0.01
    scene.render.resolution_x, scene.render.resolution_y = image.size
    scene.render.resolution_percentage, scene.render.dither_intensity = 100, 0.0
    scene.view_settings.view_transform, scene.view_settings.look = "Standard", "None"
    scene.render.filepath = str(tmp_path / "render.png")
    bpy.ops.render.render(write_still=True)
    rendered = bpy.data.images.load(str(tmp_path / "render.png"))
    got = np.rint(image_floats(rendered) * 255)[..., :3]
    want = np.rint(image_floats(image) * 255)[..., :3]
    assert np.abs(got - want).max() <= 1  # a linear reading of sRGB values would be off by up to 60


def render_digest(scene, path) -> str:
    """What the daemon should get for the Render Result: the PNG Blender writes, decoded."""
    from PIL import Image

    from bridge.core.scene import InputImage

    settings = scene.render.image_settings
    settings.file_format, settings.color_mode, settings.color_depth = "PNG", "RGBA", "8"
    bpy.data.images["Render Result"].save_render(filepath=str(path), scene=scene)
    return InputImage.from_pixels(np.asarray(Image.open(path).convert("RGBA"))).digest


def test_render_result_becomes_the_daemons_input(ext, blender_daemon, tmp_path):
    bpy.ops.wm.read_homefile(use_empty=True)
    s = settings(blender_daemon.url)
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: frame_current(ext, blender_daemon))
    with pytest.raises(RuntimeError, match="Nothing rendered yet"):  # an operator's error report, headless
        bpy.ops.turbo_bridge.send_render()
    scene = bpy.context.scene
    scene.world = with_nodes(bpy.data.worlds.new("sky"))
    sky = scene.world.node_tree.nodes["Background"].inputs["Color"]
    sky.default_value = (0.2, 0.4, 0.6, 1.0)
    bpy.ops.object.camera_add(location=(0, 0, 1))
    scene.camera = bpy.context.active_object
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples, scene.cycles.use_denoising = "CPU", 1, False
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 48, 32, 100
    scene.render.dither_intensity = 0.0  # dithering is random per save: the test's own save must match
    scene.render.image_settings.file_format = "OPEN_EXR"  # the user's output format: put back after the send
    bpy.ops.render.render()
    assert bpy.ops.turbo_bridge.send_render() == {"FINISHED"}
    assert scene.render.image_settings.file_format == "OPEN_EXR"
    first = render_digest(scene, tmp_path / "first.png")
    pump(ext.live, lambda: http(blender_daemon).health()["input"]["digest"] == first)
    pump(ext.live, lambda: ext.live.current().status == "input 48x32 sent")
    assert http(blender_daemon).health()["input"]["active"]
    s.strength = 0.75
    pump(ext.live, lambda: http(blender_daemon).params()["strength"] == 0.75)
    s.send_renders = True  # every finished render goes out by itself
    sky.default_value = (0.8, 0.1, 0.1, 1.0)
    bpy.ops.render.render()
    second = render_digest(scene, tmp_path / "second.png")
    assert second != first
    pump(ext.live, lambda: http(blender_daemon).health()["input"]["digest"] == second)
    bpy.ops.turbo_bridge.stop_input()
    pump(ext.live, lambda: ext.live.current().status == "input off: text-to-image")  # the link's report
    assert not http(blender_daemon).health()["input"]["present"]


def test_keep_makes_a_packed_copy_that_survives_saving(ext, blender_daemon, tmp_path):
    s = settings(blender_daemon.url, seed=31)
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: frame_current(ext, blender_daemon))
    live_image = bpy.data.images[ext.live.current().image_name]
    frame_pixels = image_floats(live_image).copy()
    assert bpy.ops.turbo_bridge.keep() == {"FINISHED"}
    kept = bpy.data.images["Turbo Bridge seed 31"]
    assert kept.packed_file is not None and kept.packed_file.size > 0 and kept.use_fake_user
    assert np.array_equal(image_floats(kept), frame_pixels)

    s.seed = 32  # the live image moves on; the kept one does not
    pump(ext.live, lambda: frame_current(ext, blender_daemon) and ext.live.current().applied.seed == 32)
    assert not np.array_equal(image_floats(live_image), frame_pixels)
    assert np.array_equal(image_floats(kept), frame_pixels)

    path = tmp_path / "kept.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.open_mainfile(filepath=str(path))
    assert ext.live.current() is None  # loading a file ends the session
    reloaded = bpy.data.images["Turbo Bridge seed 31"]
    assert reloaded.packed_file is not None
    assert np.array_equal(np.rint(image_floats(reloaded) * 255), np.rint(frame_pixels * 255))
