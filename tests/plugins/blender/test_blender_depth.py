"""Blender's depth as a control image: "Send Depth as Control" and "Send Each Depth".

Real Blender (the ``bpy`` wheel, Cycles on the CPU) renders a scene whose depth is known (an
orthographic camera over a plane and two boxes of known heights); the add-on sends the Z pass to
a real daemon process started with ``--controlnet depth=demo``; the daemon's control image must
be exactly the depth worked out here from the geometry, near white, far black, background black.
"""

from __future__ import annotations

import numpy as np
import pytest

try:
    import bpy
except ImportError as exc:  # not installed (Python other than 3.11), or a shared library missing
    pytest.skip(f"bpy cannot be imported ({exc}); the tests need Blender as a Python module: "
                "pip install bpy==5.0.1 on Python 3.11", allow_module_level=True)

from blender_harness import frame_current, http, pump, settings  # noqa: E402
from bridge.core.scene import InputImage  # noqa: E402

WIDTH, HEIGHT, ORTHO = 64, 48, 2.4  # 0.0375 scene units a pixel; no edge passes through a pixel centre
CAMERA_Z = 3.0
# (x0, x1, y0, y1, top z): the plane's top at 0, boxes of 0.5 standing on it (0.75 and 0.25 high).
PLANE = (-1.0, 1.0, -1.0, 1.0, 0.0)
NEAR_BOX = (0.05, 0.55, -0.25, 0.25, 0.75)
LOW_BOX = (-0.75, -0.25, -0.05, 0.45, 0.25)


@pytest.fixture(scope="module")
def depth_daemon(cache_dir, tmp_path_factory):
    from blender_harness import harness

    process = harness.start_daemon(cache_dir, extra=("--controlnet", "depth=demo"))
    yield process
    process.stop()


def known_depth_scene(tmp_path):
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_plane_add(size=2, location=(0, 0, 0))
    for x0, x1, y0, y1, top in (NEAR_BOX, LOW_BOX):
        bpy.ops.mesh.primitive_cube_add(size=0.5, location=((x0 + x1) / 2, (y0 + y1) / 2, top - 0.25))
    bpy.ops.object.camera_add(location=(0, 0, CAMERA_Z))  # looking straight down, +y up in the image
    camera = scene.camera = bpy.context.active_object
    camera.data.type, camera.data.ortho_scale = "ORTHO", ORTHO
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples, scene.cycles.use_denoising = "CPU", 1, False
    scene.cycles.pixel_filter_type, scene.cycles.filter_width = "BOX", 0.01  # samples at pixel centres
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = WIDTH, HEIGHT, 100
    scene.render.filepath = str(tmp_path / "render.png")
    return scene


def expected_control(near_box=NEAR_BOX) -> np.ndarray:
    """The control image worked out from the geometry: per pixel centre, the highest top over
    it; Z = camera height - top; near (smallest Z) 255, far 0, no surface 0; grey RGBA."""
    pixel = ORTHO / WIDTH
    xs = -ORTHO / 2 + (np.arange(WIDTH) + 0.5) * pixel
    ys = HEIGHT * pixel / 2 - (np.arange(HEIGHT) + 0.5) * pixel  # top row first
    x, y = np.meshgrid(xs, ys)
    top = np.full(x.shape, np.nan)
    for x0, x1, y0, y1, z in (PLANE, near_box, LOW_BOX):
        inside = (x0 < x) & (x < x1) & (y0 < y) & (y < y1)
        top = np.where(inside & ~(top > z), z, top)
    z = CAMERA_Z - top
    near, far = np.nanmin(z), np.nanmax(z)
    grey = np.where(np.isnan(z), 0, np.rint((far - z) / (far - near) * 255)).astype(np.uint8)
    return np.dstack([grey, grey, grey, np.full_like(grey, 255)])


def test_send_depth_as_control_sends_the_z_pass_near_white(ext, depth_daemon, tmp_path):
    scene = known_depth_scene(tmp_path)
    s = settings(depth_daemon.url)
    s.control_name, s.control_scale = "depth", 0.8
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: frame_current(ext, depth_daemon))
    bpy.context.view_layer.use_pass_z = False
    bpy.ops.render.render()
    with pytest.raises(RuntimeError, match="Z pass .* was off: switched on"):  # an operator's error, headless
        bpy.ops.turbo_bridge.send_depth()
    assert bpy.context.view_layer.use_pass_z
    scene.render.image_settings.file_format = "TIFF"  # the user's output format: put back after the send
    bpy.ops.render.render()
    assert bpy.ops.turbo_bridge.send_depth() == {"FINISHED"}
    assert scene.render.image_settings.file_format == "TIFF"
    want = expected_control()
    assert set(np.unique(want[..., 0])) == {0, 85, 255}  # background/plane, the low box, the near box
    digest = InputImage.from_pixels(want).digest
    pump(ext.live, lambda: http(depth_daemon).health()["controls"]["depth"]["digest"] == digest)
    pump(ext.live, lambda: ext.live.current().status == f"control depth: depth {WIDTH}x{HEIGHT} sent")
    assert dict(http(depth_daemon).params()["controls"])["depth"]["scale"] == pytest.approx(0.8)  # Blender: float32
    assert http(depth_daemon).health()["controls"]["depth"]["active"]

    s.send_depths = True  # every finished render's depth goes out by itself
    bpy.data.objects["Cube"].location.z += 0.1  # the near box rises: its top is now 0.85
    bpy.ops.render.render()
    moved = InputImage.from_pixels(expected_control((*NEAR_BOX[:4], 0.85))).digest
    assert moved != digest
    pump(ext.live, lambda: http(depth_daemon).health()["controls"]["depth"]["digest"] == moved)
    s.control_scale = 0.0  # the slider turns it off (sent at once while Live)
    pump(ext.live, lambda: not http(depth_daemon).health()["controls"]["depth"]["active"])


def test_an_unknown_controlnet_name_is_refused_in_the_panel(ext, depth_daemon, tmp_path):
    known_depth_scene(tmp_path)
    s = settings(depth_daemon.url)
    s.control_name = "pose"
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: frame_current(ext, depth_daemon))
    bpy.context.view_layer.use_pass_z = True
    bpy.ops.render.render()
    before = http(depth_daemon).params()
    assert bpy.ops.turbo_bridge.send_depth() == {"FINISHED"}
    pump(ext.live, lambda: "no ControlNet named 'pose'" in ext.live.current().status)
    assert http(depth_daemon).params() == before  # refused: the daemon's state untouched
