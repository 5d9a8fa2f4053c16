"""The Blender extension in real Blender (the ``bpy`` wheel) against a real daemon process.

The extension is built with the documented command, installed from its zip like a user
would, and driven headless. Timers do not fire in module mode, so ``pump`` calls the same
``live.drain`` function the timer calls, as Blender's main loop would.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

try:
    import bpy
    import addon_utils  # ships with bpy, importable once bpy is
except ImportError as exc:  # not installed (Python other than 3.11), or a shared library missing
    pytest.skip(f"bpy cannot be imported ({exc}); the tests need Blender as a Python module: "
                "pip install bpy==5.0.1 on Python 3.11", allow_module_level=True)

from bridge.client import HttpClient, ShmReader  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins" / "blender"))
import bpy_harness as harness  # noqa: E402  (a daemon process, the extension installed from its zip)
from bpy_harness import pump  # noqa: E402
REPO_MODULE = "tb_tests"
ADDON = f"bl_ext.{REPO_MODULE}.turbo_bridge"


@pytest.fixture(scope="module")
def daemon(cache_dir):
    process = harness.start_daemon(cache_dir)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory) -> Path:
    return harness.build_zip(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def installed(extension_zip, tmp_path_factory):
    """The zip installed into a throw-away extensions repository and enabled, as from the UI."""
    repo = harness.install_extension(extension_zip, tmp_path_factory.mktemp("extensions"), REPO_MODULE)
    yield
    bpy.context.preferences.extensions.repos.remove(repo)  # disables (unregisters) its add-ons
    assert not hasattr(bpy.types.Scene, "turbo_bridge")


@pytest.fixture
def ext(installed):
    """The installed add-on's modules; disconnects after the test."""
    modules = SimpleNamespace(**{name: sys.modules[f"{ADDON}.{name}"] for name in ("live", "datablocks", "link")})
    yield modules
    modules.live.disconnect()


def http(daemon) -> HttpClient:
    return HttpClient(daemon.url)


def settings(address: str, transport: str = "AUTO", **params):
    s = bpy.context.scene.turbo_bridge
    s.live = False  # set everything quietly, then connect (which sends it all)
    s.address, s.transport = address, transport
    for name, value in {"width": 64, "height": 64, "steps": 1, "guidance": 0.0, **params}.items():
        setattr(s, name, value)
    s.live = True
    return s


def frame_current(ext, daemon) -> bool:
    """The live image shows the daemon's newest state."""
    session = ext.live.current()
    return session.applied is not None and session.applied.version == http(daemon).params()["version"]


def image_floats(image) -> np.ndarray:
    width, height = image.size
    buffer = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(buffer)
    return buffer.reshape(height, width, 4)


def assert_shows(image, top_first_rgba8: np.ndarray) -> None:
    """The image holds exactly these pixels, bottom row first, as Blender's float RGBA."""
    expected = top_first_rgba8[::-1].astype(np.float32) / 255
    assert tuple(image.size) == (top_first_rgba8.shape[1], top_first_rgba8.shape[0])
    actual = image_floats(image)
    assert np.array_equal(np.rint(actual * 255).astype(np.uint8), top_first_rgba8[::-1])
    assert np.abs(actual - expected).max() < 1e-6
    assert not np.array_equal(top_first_rgba8, top_first_rgba8[::-1])  # the flip is observable


# -- packaging ---------------------------------------------------------------------------------
def test_zip_is_a_valid_extension_with_the_client_bundled(extension_zip):
    import zipfile

    names = set(zipfile.ZipFile(extension_zip).namelist())
    assert {"blender_manifest.toml", "__init__.py", "_bridge/client/__init__.py", "_bridge/client/layout.py", "_bridge/client/shm.py"} <= names
    init = zipfile.ZipFile(extension_zip).read("__init__.py").decode()
    assert "bl_info" not in init
    manifest = zipfile.ZipFile(extension_zip).read("blender_manifest.toml").decode()
    assert re.search(r'^network = "\S.+"$', manifest, re.MULTILINE)
    validator = Path(bpy.utils.system_resource("SCRIPTS")) / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    done = subprocess.run([sys.executable, str(validator), "validate", str(extension_zip)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_register_unregister_twice_leaves_nothing_running(installed, daemon):
    for _ in range(2):
        live = sys.modules[f"{ADDON}.live"]
        settings(daemon.url)
        assert bpy.ops.turbo_bridge.connect() == {"FINISHED"}
        session = live.current()
        pump(live, lambda: session.reader is not None)
        assert bpy.app.timers.is_registered(live.drain)

        addon_utils.disable(ADDON, default_set=True)
        assert not hasattr(bpy.types.Scene, "turbo_bridge")
        assert not hasattr(bpy.types, "TURBO_BRIDGE_OT_connect")
        assert not hasattr(bpy.types, "TURBO_BRIDGE_PT_view3d")
        assert not bpy.app.timers.is_registered(live.drain)
        assert live.current() is None and session.reader is None
        assert not any(t.is_alive() for t in session.link.threads)

        addon_utils.enable(ADDON, default_set=True)
        assert hasattr(bpy.types.Scene, "turbo_bridge")
        assert hasattr(bpy.types, "TURBO_BRIDGE_OT_connect")
        assert hasattr(bpy.types, "TURBO_BRIDGE_PT_image_editor")


# -- live frames -------------------------------------------------------------------------------
def test_local_daemon_frames_arrive_through_shared_memory_flipped(ext, daemon):
    settings(daemon.url, prompt="a brick wall", seed=11)
    assert bpy.ops.turbo_bridge.connect() == {"FINISHED"}
    pump(ext.live, lambda: frame_current(ext, daemon))
    session = ext.live.current()
    assert session.transport == "shared memory" and "shared memory" in session.status
    assert http(daemon).params()["prompt"] == "a brick wall" and session.applied.seed == 11

    with ShmReader(daemon.shm_name) as reader:  # the test's own reader, top row first
        frame = reader.read(force=True)
    assert frame.seq == session.applied.seq
    image = bpy.data.images[session.image_name]
    assert_shows(image, frame.pixels)
    assert not image.is_float and image.colorspace_settings.name == "sRGB"


def test_typing_sends_every_edit_and_the_last_one_wins(ext, daemon):
    s = settings(daemon.url, prompt="", seed=3)
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: frame_current(ext, daemon))
    text = "a lighthouse at dusk, oil painting"
    for end in range(1, len(text) + 1):  # one update per keystroke, as TEXTEDIT_UPDATE does
        s.prompt = text[:end]
    s.seed = 4
    pump(ext.live, lambda: http(daemon).params()["prompt"] == text and frame_current(ext, daemon))
    assert ext.live.current().applied.seed == 4


def test_live_off_holds_edits_until_generate_and_new_seed_sends_one(ext, daemon):
    s = settings(daemon.url, prompt="sandstone", seed=6)
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: frame_current(ext, daemon))
    version = http(daemon).params()["version"]
    s.live = False
    s.prompt, s.steps = "sandstone arch", 2
    time.sleep(0.3)  # time enough for a worker to deliver an edit, if one had been sent
    assert http(daemon).params()["version"] == version  # nothing sent while Live is off
    assert bpy.ops.turbo_bridge.generate() == {"FINISHED"}
    pump(ext.live, lambda: http(daemon).params()["prompt"] == "sandstone arch" and frame_current(ext, daemon))
    assert http(daemon).params()["steps"] == 2

    s.live = True
    assert bpy.ops.turbo_bridge.new_seed() == {"FINISHED"}
    pump(ext.live, lambda: http(daemon).params()["seed"] == s.seed and frame_current(ext, daemon))
    assert ext.live.current().applied.seed == s.seed


def test_http_transport_fills_the_image_with_the_frame(ext, daemon):
    settings(daemon.url, transport="HTTP", prompt="moss", seed=21)
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: frame_current(ext, daemon))
    session = ext.live.current()
    assert session.transport == "HTTP" and session.reader is None
    frame = http(daemon).frame(after=session.applied.seq - 1, timeout=5)
    assert frame.seq == session.applied.seq
    assert_shows(bpy.data.images[session.image_name], frame.pixels)


def test_size_change_resizes_the_same_image(ext, daemon):
    s = settings(daemon.url, seed=5)
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: frame_current(ext, daemon))
    image = bpy.data.images[ext.live.current().image_name]
    s.width, s.height = 100, 72  # 100 is snapped to 96
    pump(ext.live, lambda: frame_current(ext, daemon) and ext.live.current().applied.height == 72)
    assert bpy.data.images[ext.live.current().image_name] == image and tuple(image.size) == (96, 72)


def test_refused_change_is_reported_and_the_link_stays_up(ext, daemon):
    settings(daemon.url, width=256)
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: frame_current(ext, daemon))
    ext.live.submit({"width": 512})  # above this daemon's --max-size 256
    pump(ext.live, lambda: "refused" in ext.live.current().status)
    session = ext.live.current()
    assert "width" in session.status and session.connected


# -- material, keep, render ----------------------------------------------------------------------
def test_use_on_active_material_wires_an_image_texture(ext, daemon):
    settings(daemon.url, seed=8)
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: frame_current(ext, daemon))
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


def test_render_shows_the_frame_in_srgb_the_right_way_up(ext, daemon, tmp_path):
    """An emission plane seen straight on renders back the frame's own 8-bit values."""
    bpy.ops.wm.read_homefile(use_empty=True)
    settings(daemon.url, seed=13)
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: frame_current(ext, daemon))
    image = bpy.data.images[ext.live.current().image_name]
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_plane_add(size=2)
    plane = bpy.context.active_object
    material = bpy.data.materials.new("emit")
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


def test_render_result_becomes_the_daemons_input(ext, daemon, tmp_path):
    bpy.ops.wm.read_homefile(use_empty=True)
    s = settings(daemon.url)
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: frame_current(ext, daemon))
    with pytest.raises(RuntimeError, match="Nothing rendered yet"):  # an operator's error report, headless
        bpy.ops.turbo_bridge.send_render()
    scene = bpy.context.scene
    scene.world = bpy.data.worlds.new("sky")
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
    pump(ext.live, lambda: http(daemon).health()["input"]["digest"] == first)
    pump(ext.live, lambda: ext.live.current().status == "input 48x32 sent")
    assert http(daemon).health()["input"]["active"]
    s.strength = 0.75
    pump(ext.live, lambda: http(daemon).params()["strength"] == 0.75)
    s.send_renders = True  # every finished render goes out by itself
    sky.default_value = (0.8, 0.1, 0.1, 1.0)
    bpy.ops.render.render()
    second = render_digest(scene, tmp_path / "second.png")
    assert second != first
    pump(ext.live, lambda: http(daemon).health()["input"]["digest"] == second)
    bpy.ops.turbo_bridge.stop_input()
    pump(ext.live, lambda: ext.live.current().status == "input off: text-to-image")  # the link's report
    assert not http(daemon).health()["input"]["present"]


def test_keep_makes_a_packed_copy_that_survives_saving(ext, daemon, tmp_path):
    s = settings(daemon.url, seed=31)
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: frame_current(ext, daemon))
    live_image = bpy.data.images[ext.live.current().image_name]
    frame_pixels = image_floats(live_image).copy()
    assert bpy.ops.turbo_bridge.keep() == {"FINISHED"}
    kept = bpy.data.images["Turbo Bridge seed 31"]
    assert kept.packed_file is not None and kept.packed_file.size > 0 and kept.use_fake_user
    assert np.array_equal(image_floats(kept), frame_pixels)

    s.seed = 32  # the live image moves on; the kept one does not
    pump(ext.live, lambda: frame_current(ext, daemon) and ext.live.current().applied.seed == 32)
    assert not np.array_equal(image_floats(live_image), frame_pixels)
    assert np.array_equal(image_floats(kept), frame_pixels)

    path = tmp_path / "kept.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.open_mainfile(filepath=str(path))
    assert ext.live.current() is None  # loading a file ends the session
    reloaded = bpy.data.images["Turbo Bridge seed 31"]
    assert reloaded.packed_file is not None
    assert np.array_equal(np.rint(image_floats(reloaded) * 255), np.rint(frame_pixels * 255))


# -- daemon down ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_daemon_down_says_so_retries_with_backoff_and_recovers(ext, cache_dir):
    port = free_port()
    settings(f"127.0.0.1:{port}", seed=2)
    bpy.ops.turbo_bridge.connect()
    retries: list[str] = []

    def two_retries() -> bool:
        status = ext.live.current().status
        if "retrying" in status and status not in retries:
            retries.append(status)
        return len(retries) >= 2

    slowest = pump(ext.live, two_retries)
    assert "connection refused" in retries[0] and "retrying in 0.5 s" in retries[0]
    assert "retrying in 1 s" in retries[1]
    assert slowest < 0.5  # the timer never waits on the network

    daemon = harness.start_daemon(cache_dir, http_port=port)  # the daemon comes up: the link finds it
    try:
        pump(ext.live, lambda: frame_current(ext, daemon), timeout=60)
        assert ext.live.current().connected and ext.live.current().transport == "shared memory"
    finally:
        daemon.stop()
    pump(ext.live, lambda: not ext.live.current().connected, timeout=10)
    assert "unreachable" in ext.live.current().status


def test_silent_daemon_never_freezes_the_main_thread(ext):
    """A server that accepts connections and never answers: requests time out on the worker."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        settings(f"127.0.0.1:{silent.getsockname()[1]}")
        bpy.ops.turbo_bridge.connect()
        slowest = pump(ext.live, lambda: "timed out" in ext.live.current().status, timeout=20)
        assert slowest < 0.5 and not ext.live.current().connected

        bpy.ops.turbo_bridge.connect()  # a request hangs right now; disconnecting does not wait for it
        session = ext.live.current()
        time.sleep(0.2)
        started = time.perf_counter()
        assert bpy.ops.turbo_bridge.disconnect() == {"FINISHED"}
        assert time.perf_counter() - started < 0.5 and ext.live.current() is None
        assert session.link.threads[0].is_alive()  # still in its request: it ends on its own
        session.link.threads[0].join(10)
        assert not session.link.threads[0].is_alive()


def test_bad_address_is_refused_with_a_reason(ext):
    settings("ftp://example.org")
    with pytest.raises(RuntimeError, match="http:// or https://"):
        bpy.ops.turbo_bridge.connect()
    assert ext.live.current() is None
    settings("http://192.0.2.1:8787")  # not this machine; bpy's online access is off in module mode
    assert not bpy.app.online_access
    with pytest.raises(RuntimeError, match="online access is off"):
        bpy.ops.turbo_bridge.connect()


def test_a_channel_per_live_image(ext, daemon):
    s = settings(daemon.url, prompt="left wall", seed=31)
    s.channel = "left"
    assert bpy.ops.turbo_bridge.connect() == {"FINISHED"}
    left = HttpClient(daemon.url, channel="left")
    session = ext.live.current()
    pump(ext.live, lambda: session.applied is not None and session.applied.version == left.params()["version"])
    assert session.transport == "shared memory" and left.params()["prompt"] == "left wall"
    assert http(daemon).params()["prompt"] != "left wall"  # main untouched
    assert session.image_name == "Turbo Bridge left"  # its own image: the main channel keeps "Turbo Bridge"
    with ShmReader(daemon.shm_name + ".left") as reader:
        frame = reader.read(force=True)
    assert frame.seq == session.applied.seq and frame.seed == 31
    assert_shows(bpy.data.images[session.image_name], frame.pixels)
    s.channel = "main"
