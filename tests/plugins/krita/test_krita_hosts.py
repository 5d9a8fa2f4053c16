"""The Krita plugin as users get it: the built zip without turbo-bridge installed, Krita 6's PyQt6,
a Krita without numpy, and inside the real Krita (the Debian package, under Xvfb).

Each runs the plugin in its own process against a real daemon (demo model).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from krita_harness import (
    KRITA_IMPORTER,
    PLUGIN_DIR,
    REFERENCE_NAME,
    SUPPORT,
    import_plugin_zip,
    krita_missing,
    run_real_krita,
)
from turbo_bridge.notice import DOCKER_ID
from turbo_bridge.qt import BINDING

# -- the plugin as shipped, and under PyQt6 -------------------------------------------------
CHILD = """
import json, sys, time
binding, plugin_dir, tests_dir, url, block_bridge = sys.argv[1:6]
if block_bridge == "1":
    sys.modules["bridge"] = None  # a Krita without turbo-bridge installed: only the bundled copy
QtWidgets = __import__(binding + ".QtWidgets", fromlist=["x"])
app = QtWidgets.QApplication([])
sys.path.insert(0, tests_dir)
import krita_standin
sys.modules["krita"] = krita_standin
sys.path.insert(0, plugin_dir)
import turbo_bridge
from turbo_bridge import bridge_client, qt
from turbo_bridge.layer import REFERENCE_NAME
k = krita_standin.Krita.instance()
doc = k.createDocument(64, 64, "child", "RGBA", "U8", "", 72.0)
k.setActiveDocument(doc)
k.writeSetting("turbo_bridge", "address", url)
docker = k.dock_widget_factories[0].createDockWidget()
controller = docker.widget().controller
docker.widget().prompt.setPlainText("from the child, " + binding)
client = bridge_client.HttpClient(url)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    app.processEvents()
    cur, params = controller.current, client.params()
    if cur is not None and controller._pending is None and params["prompt"].endswith(binding):
        frame = client.frame(after=cur.seq - 1, timeout=5)
        if frame.seq == cur.seq and frame.version == params["version"]:
            break
    time.sleep(0.01)
layer = bytes(doc.nodeByName(REFERENCE_NAME).pixelData(0, 0, 64, 64))
transport = controller.connection.transport
controller.stop()
print(json.dumps({"binding": qt.BINDING, "client": bridge_client.HttpClient.__module__, "transport": transport,
                  "exact": frame.seq == cur.seq and layer == frame.pixels[..., [2, 1, 0, 3]].tobytes()}))
"""


def run_child(plugin_dir: Path, binding: str, demo_daemon, block_bridge: bool) -> dict:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-c", CHILD, binding, str(plugin_dir), str(SUPPORT), demo_daemon.url,
                          "1" if block_bridge else "0"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_krita_6_binding_pyqt6_end_to_end(demo_daemon):
    pytest.importorskip("PyQt6.QtWidgets")
    result = run_child(PLUGIN_DIR, "PyQt6", demo_daemon, block_bridge=False)
    assert result["binding"] == "PyQt6" and result["exact"], result


def tree(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and "__pycache__" not in path.parts}


@pytest.mark.skipif(not KRITA_IMPORTER.exists(), reason=f"Krita's importer is not installed ({KRITA_IMPORTER})")
def test_the_zip_imports_through_kritas_own_importer(tmp_path):
    """Tools > Scripts > Import Python Plugin from File... runs Krita's ``PluginImporter``: it must
    find the plugin in the built zip and install what ``build.py --install`` copies, byte for byte."""
    sys.path.insert(0, str(PLUGIN_DIR))
    import build

    archive = build.build_zip(tmp_path / "turbo_bridge_krita.zip")
    assert import_plugin_zip(archive, tmp_path / "resources") == ["turbo_bridge"]
    build.install(tmp_path / "copied")
    assert tree(tmp_path / "resources" / "pykrita") == tree(tmp_path / "copied")
    with zipfile.ZipFile(archive) as z:  # unpacked by hand, too: folders traversable, files readable
        modes = {info.filename: info.external_attr >> 16 for info in z.infolist()}
    assert modes["turbo_bridge/"] == 0o40755 and modes["turbo_bridge/__init__.py"] == 0o100644


def test_the_built_plugin_works_without_turbo_bridge_installed(tmp_path, demo_daemon):
    sys.path.insert(0, str(PLUGIN_DIR))
    import build

    archive = build.build_zip(tmp_path / "turbo_bridge_krita.zip")
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        assert {"turbo_bridge.desktop", "turbo_bridge/__init__.py", "turbo_bridge/_vendor/bridge/client/__init__.py",
                "turbo_bridge/_vendor/bridge/client/layout.py"} <= names
        desktop = z.read("turbo_bridge.desktop").decode()
        z.extractall(tmp_path / "pykrita")
    assert "ServiceTypes=Krita/PythonPlugin" in desktop and "X-KDE-Library=turbo_bridge" in desktop
    result = run_child(tmp_path / "pykrita", BINDING, demo_daemon, block_bridge=True)
    assert result["client"] == "turbo_bridge._vendor.bridge.client.http", result  # the vendored copy
    assert result["transport"].startswith("shared memory") and result["exact"], result



WITHOUT_NUMPY = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from PyQt5 import QtWidgets
app = QtWidgets.QApplication([])
import krita_standin
sys.modules["krita"] = krita_standin
sys.modules["numpy"] = None  # Krita's own builds ship no numpy
import turbo_bridge
docker = krita_standin.Krita.instance().dock_widget_factories[0].createDockWidget()
print(docker.windowTitle(), "|", docker.widget().text())
"""


def test_without_numpy_the_docker_says_what_to_install():
    out = subprocess.run([sys.executable, "-c", WITHOUT_NUMPY, str(SUPPORT), str(PLUGIN_DIR)], capture_output=True,
                         text=True, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"}, timeout=60)
    assert out.returncode == 0, out.stderr
    title, text = out.stdout.strip().split(" | ", 1)
    assert title == "turbo-bridge" and "python3-numpy" in text and "README" in text

# -- inside the real Krita (the Debian package) ------------------------------------------------
@pytest.mark.skipif(krita_missing() is not None, reason=str(krita_missing()))
def test_inside_real_krita(tmp_path, demo_daemon):
    """The built plugin in Krita itself, under Xvfb: a driver plugin types into the docker."""
    report, out, _ = run_real_krita(tmp_path, demo_daemon.url)
    assert "error" not in report, report["error"]
    assert report["krita"].startswith("5.") and report["dockers"] == [DOCKER_ID]
    assert report["settled_exact"] and report["exact_bgra"], report.get("unsettled", report)
    assert report["transport"] == f"shared memory {demo_daemon.shm_name!r}"
    assert report["reference"] == {"locked": True, "type": "paintlayer", "opacity": 153, "top": True,
                                   "active_layer": "Background"}
    left, right, *inside = report["alpha_margin_left_right_centre_rect_corners"]
    assert report["settled_wide"] and (left, right) == (0, 0) and inside == [255, 255, 255]
    assert report["projection_margin"] == [40, 90, 200, 255]  # the painting shows beside the frame
    assert report["projection_centre"] != report["projection_margin"]
    name = report["after_keep"][1]
    assert report["after_keep"] == ["Background", name, REFERENCE_NAME] and name.startswith("turbo-bridge frame")
    assert report["kept_locked"] is False and report["kept_same_pixels"] and report["undo_text"] == "Undo Add Layer"
    assert report["after_undo"] == ["Background", REFERENCE_NAME]
    assert report["after_redo"] == report["after_keep"] and report["redo_same_pixels"]
    assert report["input_layers"] == ["Background", REFERENCE_NAME]
    assert report["input_sent"], report["input_state"]  # the canvas, without the reference layer
    assert report["input_reference_visible"] and report["input_undo_unchanged"] and report["input_dropped"]
    # Keep with the reference layer dragged to the bottom: just above it, under the painting, one undo step
    assert report["bottom_before_keep"] == [REFERENCE_NAME, "Background"]
    kept = report["bottom_after_keep"][1]
    assert report["bottom_after_keep"] == [REFERENCE_NAME, kept, "Background"] and kept.startswith("turbo-bridge frame")
    assert report["bottom_undo_text"] == "Undo Add Layer" \
        and report["bottom_after_undo"] == report["bottom_before_keep"]
    # channel "alpha" on document A; to B (main) and back to A (alpha again), twice, views switched by Krita
    assert report["channel_switched_to_first"] and report["channel_alpha_connected"]
    assert report["channel_rounds"] == [{"away": ["main", "main"], "back": ["alpha", "alpha"]}] * 2, \
        report["channel_rounds"]
    assert report["channel_back_connected"]
    assert (out / "krita.png").stat().st_size > 10_000
