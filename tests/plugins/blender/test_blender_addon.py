"""The Blender extension in real Blender (the ``bpy`` wheel) against a real daemon process:
packaging, registration and live frames.

The extension is built with the documented command, installed from its zip like a user
would, and driven headless. Timers do not fire in module mode, so ``pump`` calls the same
``live.drain`` function the timer calls, as Blender's main loop would. Fixtures: conftest.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:
    import bpy
    import addon_utils  # isort: skip  (ships with bpy, importable once bpy is)
except ImportError as exc:  # not installed (Python other than 3.11), or a shared library missing
    pytest.skip(f"bpy cannot be imported ({exc}); the tests need Blender as a Python module: "
                "pip install bpy==5.0.1 on Python 3.11", allow_module_level=True)

from blender_harness import ADDON, assert_shows, frame_current, http, pump, settings, write_demo_lora  # noqa: E402
from bridge.client import HttpClient, ShmReader  # noqa: E402


# -- packaging ---------------------------------------------------------------------------------
def test_zip_is_a_valid_extension_with_the_client_bundled(extension_zip):
    import zipfile

    names = set(zipfile.ZipFile(extension_zip).namelist())
    assert {"blender_manifest.toml", "__init__.py", "_bridge/client/__init__.py", "_bridge/client/layout.py",
            "_bridge/client/shm.py"} <= names
    init = zipfile.ZipFile(extension_zip).read("__init__.py").decode()
    assert "bl_info" not in init
    manifest = zipfile.ZipFile(extension_zip).read("blender_manifest.toml").decode()
    assert re.search(r'^network = "\S.+"$', manifest, re.MULTILINE)
    validator = Path(bpy.utils.system_resource("SCRIPTS")) / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    done = subprocess.run([sys.executable, str(validator), "validate", str(extension_zip)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_register_unregister_twice_leaves_nothing_running(installed, blender_daemon):
    for _ in range(2):
        live = sys.modules[f"{ADDON}.live"]
        settings(blender_daemon.url)
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
def test_local_daemon_frames_arrive_through_shared_memory_flipped(ext, blender_daemon):
    settings(blender_daemon.url, prompt="a brick wall", seed=11)
    assert bpy.ops.turbo_bridge.connect() == {"FINISHED"}
    pump(ext.live, lambda: frame_current(ext, blender_daemon))
    session = ext.live.current()
    assert session.transport == "shared memory" and "shared memory" in session.status
    assert http(blender_daemon).params()["prompt"] == "a brick wall" and session.applied.seed == 11

    with ShmReader(blender_daemon.shm_name) as reader:  # the test's own reader, top row first
        frame = reader.read(force=True)
    assert frame.seq == session.applied.seq
    image = bpy.data.images[session.image_name]
    assert_shows(image, frame.pixels)
    assert not image.is_float and image.colorspace_settings.name == "sRGB"


def test_negative_prompt_and_lora_weights(ext, blender_daemon, cache_dir):
    folder = Path(cache_dir) / "loras"  # the daemon's default --lora-dir (TURBO_BRIDGE_CACHE)
    folder.mkdir(exist_ok=True)
    if not (folder / "bl_ink.safetensors").exists():  # made in the daemon's Python: no torch in bpy's
        write_demo_lora(cache_dir, folder / "bl_ink.safetensors", seed=40)
    s = settings(blender_daemon.url, negative_prompt="blurry", guidance=1.5)
    assert bpy.ops.turbo_bridge.connect() == {"FINISHED"}
    pump(ext.live, lambda: "bl_ink" in [item.name for item in s.loras])  # listed on connecting
    assert http(blender_daemon).params()["negative_prompt"] == "blurry"
    item = next(item for item in s.loras if item.name == "bl_ink")
    assert item.weight == 0.0
    item.weight = 0.5  # exact in Blender's single-precision floats
    pump(ext.live, lambda: http(blender_daemon).params()["loras"] == {"bl_ink": 0.5}
         and frame_current(ext, blender_daemon))
    item.weight = 0.0
    pump(ext.live, lambda: http(blender_daemon).params()["loras"] == {})


def test_connect_sends_the_settings_before_it_reports_connected(ext, blender_daemon):
    """The first frame after connecting is of our settings, never the daemon's previous state's
    (which is still in the segment when the link comes up): Keep would keep the wrong picture."""
    client = http(blender_daemon)
    version = client.patch({"seed": 500, "width": 64, "height": 64, "steps": 1, "guidance": 0.0})["version"]
    frame = client.frame(0, 30)
    while frame.version < version:
        frame = client.frame(frame.seq, 30)
    settings(blender_daemon.url, seed=501)
    bpy.ops.turbo_bridge.connect()
    session = ext.live.current()
    pump(ext.live, lambda: session.connected)
    assert client.params()["seed"] == 501  # reported connected only once the settings were in
    pump(ext.live, lambda: session.applied is not None)
    assert session.applied.seed == 501 and session.applied.version > version
    assert bpy.ops.turbo_bridge.keep() == {"FINISHED"}
    assert "Turbo Bridge seed 501" in bpy.data.images


def test_typing_sends_every_edit_and_the_last_one_wins(ext, blender_daemon):
    s = settings(blender_daemon.url, prompt="", seed=3)
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: frame_current(ext, blender_daemon))
    text = "a lighthouse at dusk, oil painting"
    for end in range(1, len(text) + 1):  # one update per keystroke, as TEXTEDIT_UPDATE does
        s.prompt = text[:end]
    s.seed = 4
    pump(ext.live, lambda: http(blender_daemon).params()["prompt"] == text and frame_current(ext, blender_daemon))
    assert ext.live.current().applied.seed == 4


def test_live_off_holds_edits_until_generate_and_new_seed_sends_one(ext, blender_daemon):
    s = settings(blender_daemon.url, prompt="sandstone", seed=6)
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: frame_current(ext, blender_daemon))
    version = http(blender_daemon).params()["version"]
    s.live = False
    s.prompt, s.steps = "sandstone arch", 2
    time.sleep(0.3)  # time enough for a worker to deliver an edit, if one had been sent
    assert http(blender_daemon).params()["version"] == version  # nothing sent while Live is off
    assert bpy.ops.turbo_bridge.generate() == {"FINISHED"}
    pump(ext.live, lambda: http(blender_daemon).params()["prompt"] == "sandstone arch"
         and frame_current(ext, blender_daemon))
    assert http(blender_daemon).params()["steps"] == 2

    s.live = True
    assert bpy.ops.turbo_bridge.new_seed() == {"FINISHED"}
    pump(ext.live, lambda: http(blender_daemon).params()["seed"] == s.seed and frame_current(ext, blender_daemon))
    assert ext.live.current().applied.seed == s.seed


def test_http_transport_fills_the_image_with_the_frame(ext, blender_daemon):
    settings(blender_daemon.url, transport="HTTP", prompt="moss", seed=21)
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: frame_current(ext, blender_daemon))
    session = ext.live.current()
    assert session.transport == "HTTP" and session.reader is None
    frame = http(blender_daemon).frame(after=session.applied.seq - 1, timeout=5)
    assert frame.seq == session.applied.seq
    assert_shows(bpy.data.images[session.image_name], frame.pixels)


def test_size_change_resizes_the_same_image(ext, blender_daemon):
    s = settings(blender_daemon.url, seed=5)
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: frame_current(ext, blender_daemon))
    image = bpy.data.images[ext.live.current().image_name]
    s.width, s.height = 100, 72  # 100 is snapped to 96
    pump(ext.live, lambda: frame_current(ext, blender_daemon) and ext.live.current().applied.height == 72)
    assert bpy.data.images[ext.live.current().image_name] == image and tuple(image.size) == (96, 72)


def test_refused_change_is_reported_and_the_link_stays_up(ext, blender_daemon):
    settings(blender_daemon.url, width=256)
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: frame_current(ext, blender_daemon))
    ext.live.submit({"width": 512})  # above this daemon's --max-size 256
    pump(ext.live, lambda: "refused" in ext.live.current().status)
    session = ext.live.current()
    assert "width" in session.status and session.connected


def test_seamless_follows_the_toggle_and_is_on_for_a_material(ext, blender_daemon):
    s = settings(blender_daemon.url, seamless=False)
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: http(blender_daemon).params()["tiling"] == "none")
    s.seamless = True
    pump(ext.live, lambda: http(blender_daemon).params()["tiling"] == "xy")
    s.seamless = False
    pump(ext.live, lambda: http(blender_daemon).params()["tiling"] == "none")
    bpy.ops.mesh.primitive_cube_add()
    assert bpy.ops.turbo_bridge.use_on_material() == {"FINISHED"}  # the image feeds a material: tileable
    assert s.seamless
    pump(ext.live, lambda: http(blender_daemon).params()["tiling"] == "xy")
    s.seamless = False


def test_record_button_starts_and_stops_the_daemons_recording(ext, blender_daemon):
    settings(blender_daemon.url, seed=21)
    bpy.ops.turbo_bridge.connect()
    pump(ext.live, lambda: frame_current(ext, blender_daemon))
    assert bpy.ops.turbo_bridge.record() == {"FINISHED"}
    pump(ext.live, lambda: ext.live.current().recording)
    bpy.context.scene.turbo_bridge.seed = 22  # a frame to record
    pump(ext.live, lambda: http(blender_daemon).record()["frames"] >= 1)
    assert bpy.ops.turbo_bridge.record() == {"FINISHED"}
    pump(ext.live, lambda: not ext.live.current().recording)
    state = http(blender_daemon).record()
    assert state["files"] and ext.live.current().status == f"recorded {state['files'][-1]}"
    ext.live.current().recording = True  # the panel thinks it records: its next press is a stop, refused
    assert bpy.ops.turbo_bridge.record() == {"FINISHED"}
    pump(ext.live, lambda: "not recording" in ext.live.current().status)


def test_a_channel_per_live_image(ext, blender_daemon):
    s = settings(blender_daemon.url, prompt="left wall", seed=31)
    s.channel = "left"
    assert bpy.ops.turbo_bridge.connect() == {"FINISHED"}
    left = HttpClient(blender_daemon.url, channel="left")
    session = ext.live.current()
    pump(ext.live, lambda: session.applied is not None and session.applied.version == left.params()["version"])
    assert session.transport == "shared memory" and left.params()["prompt"] == "left wall"
    assert http(blender_daemon).params()["prompt"] != "left wall"  # main untouched
    assert session.image_name == "Turbo Bridge left"  # its own image: the main channel keeps "Turbo Bridge"
    with ShmReader(blender_daemon.shm_name + ".left") as reader:
        frame = reader.read(force=True)
    assert frame.seq == session.applied.seq and frame.seed == 31
    assert_shows(bpy.data.images[session.image_name], frame.pixels)
    s.channel = "main"
