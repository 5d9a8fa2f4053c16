"""The Krita plugin against a stand-in of Krita's API, real Qt (offscreen) and a real daemon.

The daemon runs as its own process with the demo model, so shared memory crosses processes as
it does between the daemon and Krita. ``krita_standin`` models Krita 5.1.5 (see its docstring);
the last test runs the plugin inside the real Krita when the Debian package is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
TESTS = Path(__file__).resolve().parent
PLUGIN_DIR = TESTS.parent / "plugins" / "krita"
sys.path.insert(0, str(PLUGIN_DIR))

import krita_standin  # noqa: E402

sys.modules.setdefault("krita", krita_standin)  # what Krita gives its plugins

import turbo_bridge  # noqa: E402,F401  (registers the docker, as in Krita)
from turbo_bridge.docker import BridgePanel  # noqa: E402
from turbo_bridge.frames import fit  # noqa: E402
from turbo_bridge.layer import REFERENCE_NAME  # noqa: E402
from turbo_bridge.notice import DOCKER_ID  # noqa: E402
from turbo_bridge.qt import BINDING, QtWidgets  # noqa: E402
from turbo_bridge.workers import ParamSender, Signals, normalize_url  # noqa: E402

from bridge.client import HttpClient  # noqa: E402
from bridge.core.scene import InputImage  # noqa: E402
from conftest import unique_shm_name  # noqa: E402

KRITA = krita_standin.Krita.instance()


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def qapp():
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


class DaemonProcess:
    def __init__(self, cache_dir: Path):
        self.shm_name = unique_shm_name()
        env = {**os.environ, "TURBO_BRIDGE_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", "--model", "demo", "--http-port", "0", "--osc-port", "0",
             "--shm-name", self.shm_name, "--width", "64", "--height", "64", "--max-size", "256"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        self.log: list[str] = []
        deadline = time.monotonic() + 120
        match = None
        while time.monotonic() < deadline and not match:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            match = re.search(r"ready: http://127\.0\.0\.1:(\d+)/v1/", line)
        assert match, "".join(self.log)
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = HttpClient(self.url)
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=15)


@pytest.fixture(scope="module")
def daemon(cache_dir):
    process = DaemonProcess(cache_dir)
    yield process
    process.stop()


@pytest.fixture
def new_doc(qapp):
    def make(width=64, height=64, depth="U8"):
        doc = KRITA.createDocument(width, height, "test", "RGBA", depth, "", 72.0)
        KRITA.setActiveDocument(doc)
        return doc
    return make


@pytest.fixture
def panel(qapp, daemon):
    """The docker's panel, connected to the test daemon (as the docker does on creation)."""
    made = []

    def make(prefer_shm=True):
        KRITA.writeSetting("turbo_bridge", "address", f"127.0.0.1:{daemon.port}")
        p = BridgePanel(KRITA)
        p.controller.prefer_shm = prefer_shm
        made.append(p)
        p.reconnect()
        return p

    yield make
    for p in made:
        p.controller.stop()


def pump(until, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        QtWidgets.QApplication.processEvents()
        if until():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def settled(panel, daemon) -> bool:
    """The layer shows the daemon's newest frame, rendered from its newest parameters."""
    current = panel.controller.current
    if current is None or panel.controller._pending is not None:
        return False
    newest = daemon.client.frame(after=current.seq - 1, timeout=5)
    return newest.seq == current.seq and newest.version == daemon.client.params()["version"]


def type_prompt(panel, daemon, text: str) -> None:
    panel.prompt.setPlainText(text)
    pump(lambda: daemon.client.params()["prompt"] == text, what="the prompt to reach the daemon")
    pump(lambda: settled(panel, daemon), what="the frame of that prompt in the layer")


def daemon_frame_bgra(daemon, seq: int) -> np.ndarray:
    frame = daemon.client.frame(after=seq - 1, timeout=5)
    assert frame.seq == seq, "the daemon moved on; the test needs it idle"
    return frame.pixels[..., [2, 1, 0, 3]]


def layer_bytes(doc, name: str = REFERENCE_NAME) -> np.ndarray:
    node = doc.nodeByName(name)
    assert node is not None, f"no layer {name!r}"
    return np.frombuffer(bytes(node.pixelData(0, 0, doc.width(), doc.height())), np.uint8).reshape(
        doc.height(), doc.width(), 4)


# -- pure logic -----------------------------------------------------------------------------
@pytest.mark.parametrize("frame, doc, expected", [
    ((64, 64), (200, 100), (50, 0, 100, 100)),
    ((512, 256), (100, 100), (0, 25, 100, 50)),
    ((64, 64), (64, 64), (0, 0, 64, 64)),
    ((640, 384), (1920, 1080), (60, 0, 1800, 1080)),
])
def test_fit_keeps_aspect_and_centres(frame, doc, expected):
    placement = fit(*frame, *doc)
    assert (placement.x, placement.y, placement.width, placement.height) == expected
    covered = np.zeros(doc[::-1], int)
    for rect in [placement, *placement.margins(*doc)]:
        covered[rect.y:rect.y + rect.height, rect.x:rect.x + rect.width] += 1
    assert (covered == 1).all()  # frame and margins tile the document exactly once


def test_addresses_are_normalized_or_refused_with_a_hint():
    assert normalize_url("127.0.0.1:9999") == "http://127.0.0.1:9999"
    assert normalize_url(" http://localhost ") == "http://localhost:8787"
    assert normalize_url("[::1]:8000") == "http://[::1]:8000"
    with pytest.raises(ValueError, match="host:port"):
        normalize_url("ftp://x:1")
    with pytest.raises(ValueError, match="port must be a number"):
        normalize_url("127.0.0.1:port")


# -- the docker in Krita --------------------------------------------------------------------
def test_docker_is_registered_and_has_every_control(qapp, daemon, new_doc):
    factory = next(f for f in KRITA.dock_widget_factories if f.id() == DOCKER_ID)
    assert factory.defaultDockPosition() == krita_standin.DockWidgetFactoryBase.DockRight
    new_doc()
    KRITA.writeSetting("turbo_bridge", "address", f"127.0.0.1:{daemon.port}")
    docker = factory.createDockWidget()
    try:
        panel = docker.widget()
        assert isinstance(docker, krita_standin.DockWidget) and docker.windowTitle() == "turbo-bridge"
        labels = {w.text() for w in panel.findChildren(QtWidgets.QLabel)} | \
                 {w.text() for w in panel.findChildren(QtWidgets.QAbstractButton)}
        assert {"Daemon", "Prompt", "Seed", "Guidance", "Steps", "Opacity", "Connect", "New seed", "Live",
                "Keep as layer"} <= labels
        pump(lambda: panel.controller.connection is not None, what="the docker to connect")
        assert "connected: demo on cpu" in panel.status.text()
        docker.canvasChanged(None)  # Krita calls it on every view switch: must not raise
    finally:
        docker.widget().controller.stop()


def test_connecting_shows_the_daemons_values_and_sends_nothing(panel, daemon, new_doc):
    new_doc(64, 64)
    daemon.client.patch({"prompt": "set by another tool", "seed": 77, "steps": 2, "guidance": 1.5})
    changes = daemon.client.health()["changes"]
    p = panel()
    pump(lambda: p.controller.connection is not None, what="the connection")
    QtWidgets.QApplication.processEvents()
    assert (p.prompt.toPlainText(), p.seed.value(), p.steps.value(), p.guidance.value()) == \
        ("set by another tool", 77, 2, 1.5)
    time.sleep(0.2)
    assert daemon.client.health()["changes"] == changes
    p.steps.setValue(1)  # the first edit goes out
    pump(lambda: daemon.client.params()["steps"] == 1, what="the edit")


def test_reference_layer_receives_the_exact_frame_in_bgra_over_shared_memory(panel, daemon, new_doc):
    doc = new_doc(64, 64)
    p = panel()
    type_prompt(p, daemon, "a lighthouse at dusk")
    assert p.controller.connection.transport == f"shared memory {daemon.shm_name!r}"
    seq = p.controller.current.seq
    assert (layer_bytes(doc) == daemon_frame_bgra(daemon, seq)).all()
    nodes = [n for n in doc.rootNode().childNodes() if n.name() == REFERENCE_NAME]
    assert len(nodes) == 1 and nodes[0].locked() and nodes[0] == doc.rootNode().childNodes()[-1]
    assert doc.activeNode().name() == "Background"  # still painting where we were

    type_prompt(p, daemon, "a lighthouse at dusk, storm")  # the same layer, updated in place
    assert p.controller.current.seq > seq
    assert [n.name() for n in doc.rootNode().childNodes()] == ["Background", REFERENCE_NAME]
    assert (layer_bytes(doc) == daemon_frame_bgra(daemon, p.controller.current.seq)).all()
    assert doc.undo_texts() == ["Add Layer"]  # live updates never touch the undo stack


def test_http_transport_gives_the_same_pixels(panel, daemon, new_doc):
    doc = new_doc(64, 64)
    p = panel(prefer_shm=False)
    type_prompt(p, daemon, "over http")
    assert p.controller.connection.transport == "HTTP"
    assert (layer_bytes(doc) == daemon_frame_bgra(daemon, p.controller.current.seq)).all()


def test_frame_is_scaled_to_the_document_aspect_kept_and_centred(panel, daemon, new_doc):
    doc = new_doc(200, 100)
    p = panel()
    p.opacity.setValue(100)
    type_prompt(p, daemon, "a wide canvas")
    layer = layer_bytes(doc)
    inside = layer[:, 50:150]
    assert (layer[:, :50, 3] == 0).all() and (layer[:, 150:, 3] == 0).all()  # transparent margins
    assert (inside[..., 3] == 255).all()
    frame = daemon_frame_bgra(daemon, p.controller.current.seq)
    expected = np.asarray(Image.fromarray(frame).resize((100, 100), Image.BILINEAR)).astype(int)
    error = np.abs(inside.astype(int) - expected).mean()
    swapped = np.abs(inside.astype(int) - expected[..., [2, 1, 0, 3]]).mean()
    assert error < 4 < swapped, (error, swapped)  # the frame, scaled: not mirrored, not RGBA
    # the canvas shows it: Krita's projection was refreshed after the write
    projection = np.frombuffer(bytes(doc.pixelData(0, 0, 200, 100)), np.uint8).reshape(100, 200, 4)
    assert (projection[:, 50:150] == inside).all() and (projection[:, :50] == 255).all()


def test_keep_as_layer_adds_an_unlocked_layer_in_one_undo_step(panel, daemon, new_doc):
    doc = new_doc(96, 64)
    p = panel()
    type_prompt(p, daemon, "keep this one")
    reference = layer_bytes(doc)
    p.keep.click()
    name = f"turbo-bridge frame {p.controller.current.seq}"
    names = [n.name() for n in doc.rootNode().childNodes()]
    assert names == ["Background", name, REFERENCE_NAME]  # just under the reference layer
    kept = doc.nodeByName(name)
    assert not kept.locked() and kept.type() == "paintlayer"
    assert (layer_bytes(doc, name) == reference).all()
    assert doc.undo_texts()[-1] == "Add Layer"
    KRITA.action("edit_undo").trigger()
    assert doc.nodeByName(name) is None
    KRITA.action("edit_redo").trigger()
    assert (layer_bytes(doc, name) == reference).all()  # back, with its pixels


def test_frames_follow_the_active_document(panel, daemon, new_doc):
    first = new_doc(64, 64)
    p = panel()
    type_prompt(p, daemon, "first document")
    shown_in_first = layer_bytes(first).copy()
    second = new_doc(64, 64)
    p.controller.document_changed()  # what the docker's canvasChanged does on a view switch
    pump(lambda: not p.controller._timer.isActive(), what="the view switch")
    assert second.nodeByName(REFERENCE_NAME) is None  # no layer until a frame comes
    type_prompt(p, daemon, "second document")
    assert (layer_bytes(second) == daemon_frame_bgra(daemon, p.controller.current.seq)).all()
    assert (layer_bytes(first) == shown_in_first).all()


def test_frames_wait_while_a_stroke_runs(panel, daemon, new_doc):
    doc = new_doc(64, 64)
    p = panel()
    type_prompt(p, daemon, "before the stroke")
    before, writes, refreshes = layer_bytes(doc).copy(), doc.pixel_writes, doc.refreshes
    doc.stroke_running = True
    p.prompt.setPlainText("during the stroke")
    pump(lambda: p.controller._pending is not None and p.controller.deferred > 0, what="a deferred frame")
    assert (layer_bytes(doc) == before).all() and (doc.pixel_writes, doc.refreshes) == (writes, refreshes)
    doc.stroke_running = False
    pump(lambda: settled(p, daemon), what="the frame after the stroke")
    assert (layer_bytes(doc) == daemon_frame_bgra(daemon, p.controller.current.seq)).all()
    assert doc.refreshes == refreshes + 1  # frames queued meanwhile: one write, one refresh


def test_a_burst_of_changes_is_one_request_with_the_newest_values(qapp, daemon):
    sender = ParamSender(daemon.url, Signals())
    for i in range(100):  # typed before the sender's first request goes out
        sender.submit({"prompt": "x" * (i + 1), "seed": i})
    sender.start()
    try:
        pump(lambda: sender.sent == 1, what="the request")
        time.sleep(0.2)
        assert sender.sent == 1
        params = daemon.client.params()
        assert params["prompt"] == "x" * 100 and params["seed"] == 99
    finally:
        sender.stop()


def test_opacity_slider_sets_the_layer_and_refreshes(panel, daemon, new_doc):
    doc = new_doc(64, 64)
    p = panel()
    type_prompt(p, daemon, "opacity")
    refreshes = doc.refreshes
    p.opacity.setValue(25)
    pump(lambda: doc.refreshes > refreshes, what="a refresh")
    assert doc.nodeByName(REFERENCE_NAME).opacity() == 64  # 25% of 255
    assert KRITA.readSetting("turbo_bridge", "opacity", "") == "25"


def test_live_off_sends_nothing_and_on_catches_up(panel, daemon, new_doc):
    new_doc(64, 64)
    p = panel()
    type_prompt(p, daemon, "live")
    p.live.setChecked(False)
    p.prompt.setPlainText("typed while not live")
    p.seed.setValue(4242)
    time.sleep(0.3)
    pump(lambda: True)
    assert daemon.client.params()["prompt"] == "live"
    p.live.setChecked(True)
    pump(lambda: daemon.client.params()["prompt"] == "typed while not live", what="catch-up")
    assert daemon.client.params()["seed"] == 4242
    pump(lambda: settled(p, daemon), what="the caught-up frame")


def test_canvas_as_input_sends_the_painting_without_the_reference_layer(panel, daemon, new_doc):
    doc = new_doc(64, 64)
    p = panel()
    type_prompt(p, daemon, "canvas input")
    reference = doc.nodeByName(REFERENCE_NAME)
    assert reference is not None and reference.visible()  # a noise frame over the painting
    painting = np.random.default_rng(3).integers(0, 256, (64, 64, 4), np.uint8)
    painting[..., 3] = 255
    doc.activeNode().setPixelData(painting.tobytes(), 0, 0, 64, 64)  # B, G, R, A bytes
    doc.refreshProjection()
    undo = doc.undo_texts()
    p.strength.setValue(0.75)
    p.input_live.setChecked(True)
    expected = InputImage.from_pixels(painting[..., [2, 1, 0, 3]]).digest  # as RGBA, the layer alone
    pump(lambda: daemon.client.health()["input"]["digest"] == expected, what="the painting as input")
    assert daemon.client.params()["strength"] == 0.75 and daemon.client.health()["input"]["active"]
    assert reference.visible() and doc.undo_texts() == undo  # shown again; no undo steps
    doc.selection_box = (8, 16, 32, 24)  # only the selection's part
    pump(lambda: daemon.client.health()["input"]["digest"] ==
         InputImage.from_pixels(painting[16:40, 8:40][..., [2, 1, 0, 3]]).digest, what="the selection")
    doc.selection_box = None
    captures = p.controller.captures
    doc.stroke_running = True  # never read the canvas during a stroke
    time.sleep(0.5)
    pump(lambda: True)
    assert p.controller.captures == captures
    doc.stroke_running = False
    p.input_live.setChecked(False)
    pump(lambda: not daemon.client.health()["input"]["present"], what="the input dropped")
    assert p.controller._input.sent >= 2


def test_canvas_input_is_flattened_over_white_and_fitted_to_the_frame():
    from turbo_bridge.canvas import Capture, prepared

    clear = np.zeros((40, 80, 4), np.uint8)  # transparent: paper
    clear[:, :40] = (10, 20, 30, 255)
    out = prepared(Capture(clear.tobytes(), 80, 40), (64, 64))
    assert out.shape == (32, 64, 4)  # fitted into the frame size, aspect kept
    assert (out[:, -8:, :3] == 255).all() and (out[:, :16] == (30, 20, 10, 255)).all()


def test_a_document_that_is_not_8bit_rgba_is_refused_with_a_hint(panel, daemon, new_doc):
    doc = new_doc(64, 64, depth="U16")
    p = panel()
    p.prompt.setPlainText("sixteen bits")
    pump(lambda: "8-bit RGBA" in p.status.text(), what="the refusal")
    assert "Convert Image Color Space" in p.status.text()
    assert doc.nodeByName(REFERENCE_NAME) is None


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


def run_child(plugin_dir: Path, binding: str, daemon, block_bridge: bool) -> dict:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-c", CHILD, binding, str(plugin_dir), str(TESTS), daemon.url,
                          "1" if block_bridge else "0"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_krita_6_binding_pyqt6_end_to_end(daemon):
    pytest.importorskip("PyQt6.QtWidgets")
    result = run_child(PLUGIN_DIR, "PyQt6", daemon, block_bridge=False)
    assert result["binding"] == "PyQt6" and result["exact"], result


def test_the_built_plugin_works_without_turbo_bridge_installed(tmp_path, daemon):
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
    result = run_child(tmp_path / "pykrita", BINDING, daemon, block_bridge=True)
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
    out = subprocess.run([sys.executable, "-c", WITHOUT_NUMPY, str(TESTS), str(PLUGIN_DIR)], capture_output=True,
                         text=True, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"}, timeout=60)
    assert out.returncode == 0, out.stderr
    title, text = out.stdout.strip().split(" | ", 1)
    assert title == "turbo-bridge" and "python3-numpy" in text and "README" in text

# -- inside the real Krita (the Debian package) ------------------------------------------------
def krita_missing() -> str | None:
    if not (shutil.which("krita") and shutil.which("xvfb-run")):
        return "needs the krita and xvfb packages (apt-get install krita xvfb python3-pyqt5 python3-numpy)"
    probe = subprocess.run(["/usr/bin/python3", "-c", "import numpy, PyQt5.QtCore"], capture_output=True)
    return None if probe.returncode == 0 else "Krita's Python (Debian's python3) needs python3-numpy and python3-pyqt5"


@pytest.mark.skipif(krita_missing() is not None, reason=str(krita_missing()))
def test_inside_real_krita(tmp_path, daemon):
    """The built plugin in Krita itself, under Xvfb: a driver plugin types into the docker."""
    sys.path.insert(0, str(PLUGIN_DIR))
    import build

    pykrita = tmp_path / "share" / "krita" / "pykrita"
    build.install(pykrita)
    shutil.copytree(TESTS / "krita_real", pykrita, dirs_exist_ok=True)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "kritarc").write_text(  # plugins on; the docker's saved address: our daemon
        f"[python]\nenable_turbo_bridge=true\nenable_tb_krita_e2e=true\n\n[turbo_bridge]\naddress={daemon.url}\n")
    out = Path(os.environ.get("TB_KRITA_OUT") or tmp_path / "out")
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_DATA_HOME": str(tmp_path / "share"),
           "TB_E2E_URL": daemon.url, "TB_E2E_OUT": str(out)}
    env.pop("QT_QPA_PLATFORM", None)
    display = str(100 + os.getpid() % 800)  # -a alone races other Xvfb servers starting at :99
    proc = subprocess.Popen(["xvfb-run", "-a", "-n", display, "-s", "-screen 0 1600x1000x24", "krita", "--nosplash"],
                            env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    assert (out / "report.json").exists(), err[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert "error" not in report, report["error"]
    assert report["krita"].startswith("5.") and report["dockers"] == [DOCKER_ID]
    assert report["settled_exact"] and report["exact_bgra"], report
    assert report["transport"] == f"shared memory {daemon.shm_name!r}"
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
    assert (out / "krita.png").stat().st_size > 10_000


def test_each_document_drives_its_own_channel(panel, daemon, new_doc):
    first = new_doc(64, 64)
    p = panel()
    type_prompt(p, daemon, "the main document")  # the first document: channel main
    second = new_doc(64, 64)
    p.controller.document_changed()
    p.channel.setText("sketch")
    p.pick_channel()  # editingFinished: this document's channel, created on the daemon at connect
    sketch = HttpClient(daemon.client.base_url, channel="sketch")
    pump(lambda: p.controller.connection is not None and "sketch" in p.controller.connection.transport,
         what="the connection to channel sketch's segment")
    assert p.controller.connection.transport == f"shared memory {daemon.shm_name + '.sketch'!r}"
    p.prompt.setPlainText("only in the sketch")
    pump(lambda: sketch.params()["prompt"] == "only in the sketch", what="the prompt on channel sketch")
    assert daemon.client.params()["prompt"] == "the main document"  # main untouched
    version = sketch.params()["version"]
    pump(lambda: p.controller.current is not None and sketch.frame(0, 5).version == version
         and p.controller.current.seq == sketch.frame(0, 5).seq and not p.controller._timer.isActive(),
         what="channel sketch's frame in the second document")
    frame = sketch.frame(after=p.controller.current.seq - 1, timeout=5)
    assert (layer_bytes(second) == frame.pixels[..., [2, 1, 0, 3]]).all()
    KRITA.setActiveDocument(first)  # back to the first document: back to channel main
    p.controller.document_changed()
    assert p.controller.channel == "main"
    pump(lambda: p.controller.connection is not None and p.controller.connection.transport ==
         f"shared memory {daemon.shm_name!r}", what="the connection back on main")
