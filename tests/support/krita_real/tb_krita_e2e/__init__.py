"""Test driver run inside a real Krita: drives the turbo-bridge docker as a user would.

Started by tests/krita_harness.run_real_krita with TB_E2E_URL (the daemon), TB_E2E_OUT (a folder
for report.json and krita.png) and TB_E2E_MODE: "" types prompts into the docker and checks the
layers through Krita's own API; "control" sends a painted layer with "Layer as control"; "bench"
times the GUI side. Each takes a screenshot and quits Krita.
"""

import json
import os
import time
import traceback

from krita import Extension, Krita
from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QApplication, QDockWidget

REFERENCE = "turbo-bridge reference"


def pump(until, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        QApplication.processEvents()
        if until():
            return True
        time.sleep(0.01)
    return False


def layer_bytes(doc, name):
    return bytes(doc.nodeByName(name).pixelData(0, 0, doc.width(), doc.height()))


def new_view(window, width, height, name):
    doc = Krita.instance().createDocument(width, height, name, "RGBA", "U8", "", 72.0)
    window.addView(doc)
    Krita.instance().setActiveDocument(doc)
    pump(lambda: Krita.instance().activeDocument() is not None, 5)
    return doc


def input_digest(rgba):
    """The daemon's content digest of an input image (bridge.core.scene.InputImage.from_pixels)."""
    import hashlib

    digest = hashlib.blake2b(rgba.tobytes(), digest_size=16, person=b"tb-input-v1")
    digest.update(f"{rgba.shape[1]}x{rgba.shape[0]}".encode())
    return digest.hexdigest()


def drive(report):
    from turbo_bridge.bridge_client import HttpClient  # the plugin's own (bundled) client

    k = Krita.instance()
    window = k.activeWindow()
    screen = QApplication.primaryScreen().geometry()
    window.qwindow().setGeometry(0, 0, screen.width(), screen.height())  # no window manager under Xvfb
    report["krita"] = k.version()
    docks = [d for d in window.qwindow().findChildren(QDockWidget) if hasattr(d.widget(), "controller")]
    report["dockers"] = [d.objectName() for d in docks]
    dock = docks[0]
    dock.show()
    panel = dock.widget()
    controller = panel.controller
    client = HttpClient(os.environ["TB_E2E_URL"])

    def settled(prompt):
        cur, params = controller.current, client.params()
        if cur is None or controller._pending is not None or params["prompt"] != prompt:
            return False
        newest = client.frame(after=cur.seq - 1, timeout=5)
        return newest.seq == cur.seq and newest.version == params["version"]

    # 1. a document the frame's size: the layer must hold the frame's exact pixels, in BGRA
    size = client.params()
    doc = first_doc = new_view(window, size["width"], size["height"], "exact")
    panel.address.setText(os.environ["TB_E2E_URL"])
    panel.reconnect()
    panel.prompt.setPlainText("a lighthouse on a cliff at dusk")
    report["settled_exact"] = pump(lambda: settled("a lighthouse on a cliff at dusk"))
    if not report["settled_exact"]:  # what it was waiting for, for the failure message
        cur, params = controller.current, client.params()
        report["unsettled"] = {"shown_seq": None if cur is None else cur.seq,
                               "pending": controller._pending is not None,
                               "daemon_prompt": params["prompt"], "daemon_version": params["version"],
                               "newest_seq": getattr(client.frame(timeout=5), "seq", None), "status": controller.status}
    frame = client.frame(after=controller.current.seq - 1, timeout=5)
    report["compared_seqs"] = [controller.current.seq, frame.seq]  # shown, daemon's (differ: it moved on)
    report["transport"] = controller.connection.transport
    report["exact_bgra"] = layer_bytes(doc, REFERENCE) == frame.pixels[..., [2, 1, 0, 3]].tobytes()
    node = doc.nodeByName(REFERENCE)
    report["reference"] = {"locked": node.locked(), "type": node.type(), "opacity": node.opacity(),
                           "top": doc.rootNode().childNodes()[-1].name() == REFERENCE,
                           "active_layer": doc.activeNode().name()}

    # 2. a wider document with some painting: scaled, centred, composited on the canvas
    doc = new_view(window, 480, 300, "wide")
    background = doc.rootNode().childNodes()[0]
    stripes = bytearray()
    for y in range(300):
        colour = (40, 90, 200, 255) if (y // 30) % 2 else (230, 200, 120, 255)  # B, G, R, A
        stripes += bytes(colour) * 480
    background.setPixelData(bytes(stripes), 0, 0, 480, 300)
    doc.refreshProjection()
    dock.canvasChanged(None)
    panel.opacity.setValue(70)
    panel.prompt.setPlainText("a lighthouse on a cliff at dusk, storm clouds")
    report["settled_wide"] = pump(lambda: settled("a lighthouse on a cliff at dusk, storm clouds")
                                  and doc.nodeByName(REFERENCE) is not None)
    layer = layer_bytes(doc, REFERENCE)
    alpha = [layer[(y * 480 + x) * 4 + 3] for y, x in ((150, 10), (150, 469), (150, 240), (5, 100), (294, 379))]
    report["alpha_margin_left_right_centre_rect_corners"] = alpha
    report["projection_centre"] = list(bytes(doc.pixelData(240, 150, 1, 1)))
    report["projection_margin"] = list(bytes(doc.pixelData(10, 150, 1, 1)))
    report["opacity_byte"] = doc.nodeByName(REFERENCE).opacity()

    # 3. keep as layer, undo, redo
    panel.keep.click()
    name = f"turbo-bridge frame {controller.current.seq}"
    pump(lambda: doc.nodeByName(name) is not None, 10)  # a condition, not a 0.3 s pause: a busy machine
    report["after_keep"] = [n.name() for n in doc.rootNode().childNodes()]
    kept = doc.nodeByName(name)
    report["kept_locked"] = kept.locked() if kept else None
    report["kept_same_pixels"] = kept is not None and layer_bytes(doc, name) == layer
    undo_text = k.action("edit_undo").text()
    report["undo_text"] = undo_text
    k.action("edit_undo").trigger()
    doc.waitForDone()
    pump(lambda: doc.nodeByName(name) is None, 10)
    report["after_undo"] = [n.name() for n in doc.rootNode().childNodes()]
    k.action("edit_redo").trigger()
    doc.waitForDone()
    pump(lambda: doc.nodeByName(name) is not None, 10)
    report["after_redo"] = [n.name() for n in doc.rootNode().childNodes()]
    report["redo_same_pixels"] = doc.nodeByName(name) is not None and layer_bytes(doc, name) == layer
    report["applied"], report["refreshes"], report["deferred"] = \
        controller.applied, controller.refreshes, controller.deferred

    # 4. the canvas as input: the stripes without the reference layer, as the daemon gets them
    from turbo_bridge.canvas import Capture, prepared

    k.action("edit_undo").trigger()  # the kept layer goes: the canvas is the stripes again
    doc.waitForDone()
    pump(lambda: doc.nodeByName(name) is None, 10)
    report["input_layers"] = [n.name() for n in doc.rootNode().childNodes()]
    frame_size = (client.params()["width"], client.params()["height"])
    expected = input_digest(prepared(Capture(bytes(stripes), 480, 300), frame_size))
    undo_before = k.action("edit_undo").text()
    panel.input_live.setChecked(True)
    report["input_sent"] = pump(lambda: client.health()["input"]["digest"] == expected, 30)
    report["input_state"] = client.health()["input"]
    report["input_reference_visible"] = doc.nodeByName(REFERENCE).visible()
    report["input_undo_unchanged"] = k.action("edit_undo").text() == undo_before
    panel.input_live.setChecked(False)
    report["input_dropped"] = pump(lambda: not client.health()["input"]["present"], 10)
    report["status"] = panel.status.text()

    # 5. keep with the reference layer dragged under the painting (the lowest layer)
    background = doc.nodeByName("Background")
    background.remove()  # as a drag in the Layers docker would: the painting over the reference
    doc.rootNode().addChildNode(background, None)
    doc.waitForDone()
    report["bottom_before_keep"] = [n.name() for n in doc.rootNode().childNodes()]
    panel.keep.click()
    name = f"turbo-bridge frame {controller.current.seq}"
    pump(lambda: doc.nodeByName(name) is not None, 10)
    report["bottom_after_keep"] = [n.name() for n in doc.rootNode().childNodes()]
    report["bottom_undo_text"] = k.action("edit_undo").text()
    k.action("edit_undo").trigger()
    doc.waitForDone()
    pump(lambda: doc.nodeByName(name) is None, 10)
    report["bottom_after_undo"] = [n.name() for n in doc.rootNode().childNodes()]

    # 6. channels per document: "alpha" on the first document, away to the second and back (twice),
    # the view switched as a user does; Krita calls the docker's canvasChanged, nothing else is called
    first, second = first_doc, doc
    views = {view.document().name(): view for view in window.views()}

    def show(document):
        views[document.name()].setVisible()  # libkis View::setVisible: make this view the active one
        return pump(lambda: k.activeDocument() == document and panel.channel.text() == controller.channel, 10)

    report["channel_switched_to_first"] = show(first)
    panel.channel.setText("alpha")
    panel.pick_channel()
    report["channel_alpha_connected"] = pump(lambda: controller.connection is not None
                                             and controller.connection.transport.endswith(".alpha'"), 30)
    rounds = []
    for _ in range(2):
        show(second)
        away = (controller.channel, panel.channel.text())
        show(first)
        rounds.append({"away": list(away), "back": [controller.channel, panel.channel.text()]})
    report["channel_rounds"] = rounds
    report["channel_back_connected"] = pump(lambda: controller.connection is not None
                                            and controller.connection.transport.endswith(".alpha'"), 30)

    report["zoom_actions"] = sorted(a.objectName() for a in k.actions() if "zoom" in a.objectName())
    return controller


def control(report):
    """"Layer as control": a line sketch painted into its own layer reaches the daemon as the
    control image of ControlNet "lines", with the preprocess and scale picked in the docker."""
    import numpy as np

    k = Krita.instance()
    window = k.activeWindow()
    docks = [d for d in window.qwindow().findChildren(QDockWidget) if hasattr(d.widget(), "controller")]
    dock = docks[0]
    dock.show()
    panel = dock.widget()
    controller = panel.controller
    client_module = __import__("turbo_bridge.bridge_client", fromlist=["HttpClient"])
    client = client_module.HttpClient(os.environ["TB_E2E_URL"])
    size = client.params()
    width, height = size["width"], size["height"]
    doc = new_view(window, width, height, "control")
    sketch = doc.createNode("sketch", "paintlayer")
    doc.rootNode().addChildNode(sketch, None)
    bgra = np.zeros((height, width, 4), np.uint8)  # transparent: paper (white) where nothing is drawn
    bgra[height // 3:height // 3 + 2, 4:width - 4] = (0, 0, 0, 255)  # two black strokes
    bgra[4:height - 4, width // 2:width // 2 + 2] = (0, 0, 0, 255)
    sketch.setPixelData(bgra.tobytes(), 0, 0, width, height)
    doc.refreshProjection()
    report["layer_roundtrip"] = layer_bytes(doc, "sketch") == bgra.tobytes()
    # What the daemon must hold: the strokes over white paper, RGBA, worked out here.
    rgba = np.full((height, width, 4), 255, np.uint8)
    rgba[bgra[..., 3] == 255] = (0, 0, 0, 255)
    expected = input_digest(rgba)
    panel.address.setText(os.environ["TB_E2E_URL"])
    panel.reconnect()
    report["connected"] = pump(lambda: controller.connection is not None and controller.current is not None)
    layers = panel.steering.control_layer
    layers.showPopup()  # lists the document's layers as they are now
    layers.hidePopup()
    report["layers_listed"] = [layers.itemText(i) for i in range(layers.count())]
    layers.setCurrentText("sketch")
    panel.steering.control_name.setText("lines")
    panel.steering.control_preprocess.setCurrentText("canny")
    panel.steering.control_scale.setValue(1.2)
    before = controller.current.seq
    panel.steering.send_control.click()
    report["control_sent"] = pump(lambda: client.health()["controls"]["lines"]["digest"] == expected, 60)
    report["control_state"] = client.health()["controls"]["lines"]
    report["control_params"] = client.params()["controls"].get("lines")
    version = client.params()["version"]

    def steered_shown():  # the daemon rendered the steered state, and the docker shows that frame
        newest = client.frame(after=0, timeout=1)
        return newest is not None and newest.version >= version and controller.current.seq >= newest.seq > before

    report["steered_frame"] = pump(steered_shown, 60)
    report["status_sent"] = panel.status.text()
    panel.steering.control_name.setText("pose")  # not a --controlnet of this daemon: the docker says so
    panel.steering.send_control.click()
    report["refused"] = pump(lambda: "no ControlNet named 'pose'" in panel.status.text(), 30)
    report["status_refused"] = panel.status.text()
    return controller


def finish(report, controller):
    """Back in Krita's own event loop (the Layers docker only updates there): screenshot, quit."""
    try:
        window = Krita.instance().activeWindow()
        dock = next(d for d in window.qwindow().findChildren(QDockWidget) if hasattr(d.widget(), "controller"))
        QApplication.primaryScreen().grabWindow(0).save(os.path.join(os.environ["TB_E2E_OUT"], "krita.png"))
        dock.grab().save(os.path.join(os.environ["TB_E2E_OUT"], "docker.png"))
    except Exception:
        report["error"] = traceback.format_exc()
    finally:
        if controller is not None:
            controller.stop()
        write_and_quit(report)


def write_and_quit(report):
    with open(os.path.join(os.environ["TB_E2E_OUT"], "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    os._exit(0)  # quit without "save changes?" dialogs


def bench(report, repeats=7):
    """GUI-thread cost of one frame in real Krita: fitting (worker side), write + refresh (GUI side)."""
    import numpy as np

    from turbo_bridge.frames import place
    from turbo_bridge.layer import ReferenceLayer

    window = Krita.instance().activeWindow()
    frame = np.random.default_rng(0).integers(0, 256, (512, 512, 4), dtype=np.uint8)
    frame[..., 3] = 255
    results = {}
    from turbo_bridge.canvas import capture

    for width, height in ((512, 512), (1024, 1024), (2048, 2048), (3840, 2160)):
        doc = new_view(window, width, height, f"bench {width}x{height}")
        layer = ReferenceLayer()
        fit_ms, apply_ms, capture_ms = [], [], []
        for i in range(repeats):
            t0 = time.perf_counter()
            picture = place(frame, i + 1, width, height)
            t1 = time.perf_counter()
            layer.show(doc, picture)
            doc.refreshProjection()
            t2 = time.perf_counter()
            capture(doc)  # live input: the canvas without the reference layer (hide, refresh, read, show, refresh)
            t3 = time.perf_counter()
            fit_ms.append((t1 - t0) * 1000)
            apply_ms.append((t2 - t1) * 1000)
            capture_ms.append((t3 - t2) * 1000)
        results[f"{width}x{height}"] = {"fit_ms_median": round(sorted(fit_ms)[repeats // 2], 1),
                                         "write_and_refresh_ms_median": round(sorted(apply_ms)[repeats // 2], 1),
                                         "canvas_capture_ms_median": round(sorted(capture_ms)[repeats // 2], 1)}
        report["bench_512px_frame"] = results
        with open(os.path.join(os.environ["TB_E2E_OUT"], "bench-progress.json"), "w") as f:
            json.dump(results, f)


def run():
    report = {}
    try:
        if os.environ.get("TB_E2E_BENCH"):
            bench(report)
            write_and_quit(report)
        controller = control(report) if os.environ.get("TB_E2E_MODE") == "control" else drive(report)
    except Exception:
        report["error"] = traceback.format_exc()
        write_and_quit(report)
    QTimer.singleShot(1500, lambda: finish(report, controller))


class Driver(Extension):
    def setup(self):
        pass

    def createActions(self, window):
        QTimer.singleShot(2000, run)


if os.environ.get("TB_E2E_OUT"):
    Krita.instance().addExtension(Driver(Krita.instance()))
