"""The Krita plugin's docker against a stand-in of Krita's API, real Qt (offscreen) and a real daemon.

The daemon runs as its own process with the demo model, so shared memory crosses processes as
it does between the daemon and Krita. ``krita_standin`` models Krita 5.1.5 (see its docstring);
tests/plugins/krita/test_krita_hosts.py runs the plugin as shipped, under PyQt6, and inside the real Krita.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import krita_standin
from bridge.client import HttpClient, parse_address
from bridge.core.scene import InputImage
from krita_harness import (
    KRITA,
    REFERENCE_NAME,
    QtWidgets,
    daemon_frame_bgra,
    layer_bytes,
    pump,
    settled,
    type_prompt,
)
from turbo_bridge.frames import fit
from turbo_bridge.notice import DOCKER_ID
from turbo_bridge.workers import FrameWorker, ParamSender, Signals


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


@pytest.mark.parametrize("host, transport", [("127.0.0.2", "shared memory"), ("192.0.2.1", "HTTP")])
def test_shared_memory_is_read_only_from_a_daemon_on_this_machine(qapp, demo_daemon, host, transport):
    """Another machine's daemon reports a segment name that may exist here (the default one, another
    daemon's): only a loopback address opens it. Which addresses are loopback: tests/client/test_address.py."""
    worker = FrameWorker(parse_address(f"{host}:{demo_daemon.port}"), Signals())
    source, connection = worker._open(demo_daemon.client)  # the daemon answers as if it were at host
    try:
        assert connection.transport.startswith(transport)
    finally:
        source.close()


# -- the docker in Krita --------------------------------------------------------------------
def test_docker_is_registered_and_has_every_control(qapp, demo_daemon, new_doc):
    factory = next(f for f in KRITA.dock_widget_factories if f.id() == DOCKER_ID)
    assert factory.defaultDockPosition() == krita_standin.DockWidgetFactoryBase.DockRight
    new_doc()
    KRITA.writeSetting("turbo_bridge", "address", f"127.0.0.1:{demo_daemon.port}")
    docker = factory.createDockWidget()
    try:
        panel = docker.widget()
        assert isinstance(docker, krita_standin.DockWidget) and docker.windowTitle() == "turbo-bridge"
        labels = {w.text() for w in panel.findChildren(QtWidgets.QLabel)} | \
                 {w.text() for w in panel.findChildren(QtWidgets.QAbstractButton)}
        assert {"Daemon", "Prompt", "Seed", "Guidance", "Steps", "Opacity", "Connect", "New seed", "Live",
                "Keep as layer", "Seamless", "Record"} <= labels
        pump(lambda: panel.controller.connection is not None, what="the docker to connect")
        assert "connected: demo on cpu" in panel.status.text()
        docker.canvasChanged(None)  # Krita calls it on every view switch: must not raise
    finally:
        docker.widget().controller.stop()


def test_connecting_shows_the_daemons_values_and_sends_nothing(panel, demo_daemon, new_doc):
    new_doc(64, 64)
    demo_daemon.client.patch({"prompt": "set by another tool", "seed": 77, "steps": 2, "guidance": 1.5})
    changes = demo_daemon.client.health()["changes"]
    p = panel()
    pump(lambda: p.controller.connection is not None, what="the connection")
    QtWidgets.QApplication.processEvents()
    assert (p.prompt.toPlainText(), p.seed.value(), p.steps.value(), p.guidance.value()) == \
        ("set by another tool", 77, 2, 1.5)
    time.sleep(0.2)
    assert demo_daemon.client.health()["changes"] == changes
    p.steps.setValue(1)  # the first edit goes out
    pump(lambda: demo_daemon.client.params()["steps"] == 1, what="the edit")


def test_reference_layer_receives_the_exact_frame_in_bgra_over_shared_memory(panel, demo_daemon, new_doc):
    doc = new_doc(64, 64)
    p = panel()
    type_prompt(p, demo_daemon, "a lighthouse at dusk")
    assert p.controller.connection.transport == f"shared memory {demo_daemon.shm_name!r}"
    seq = p.controller.current.seq
    assert (layer_bytes(doc) == daemon_frame_bgra(demo_daemon, seq)).all()
    nodes = [n for n in doc.rootNode().childNodes() if n.name() == REFERENCE_NAME]
    assert len(nodes) == 1 and nodes[0].locked() and nodes[0] == doc.rootNode().childNodes()[-1]
    assert doc.activeNode().name() == "Background"  # still painting where we were

    type_prompt(p, demo_daemon, "a lighthouse at dusk, storm")  # the same layer, updated in place
    assert p.controller.current.seq > seq
    assert [n.name() for n in doc.rootNode().childNodes()] == ["Background", REFERENCE_NAME]
    assert (layer_bytes(doc) == daemon_frame_bgra(demo_daemon, p.controller.current.seq)).all()
    assert doc.undo_texts() == ["Add Layer"]  # live updates never touch the undo stack


def test_http_transport_gives_the_same_pixels(panel, demo_daemon, new_doc):
    doc = new_doc(64, 64)
    p = panel(prefer_shm=False)
    type_prompt(p, demo_daemon, "over http")
    assert p.controller.connection.transport == "HTTP"
    assert (layer_bytes(doc) == daemon_frame_bgra(demo_daemon, p.controller.current.seq)).all()


def test_frame_is_scaled_to_the_document_aspect_kept_and_centred(panel, demo_daemon, new_doc):
    doc = new_doc(200, 100)
    p = panel()
    p.opacity.setValue(100)
    type_prompt(p, demo_daemon, "a wide canvas")
    layer = layer_bytes(doc)
    inside = layer[:, 50:150]
    assert (layer[:, :50, 3] == 0).all() and (layer[:, 150:, 3] == 0).all()  # transparent margins
    assert (inside[..., 3] == 255).all()
    frame = daemon_frame_bgra(demo_daemon, p.controller.current.seq)
    expected = np.asarray(Image.fromarray(frame).resize((100, 100), Image.BILINEAR)).astype(int)
    error = np.abs(inside.astype(int) - expected).mean()
    swapped = np.abs(inside.astype(int) - expected[..., [2, 1, 0, 3]]).mean()
    assert error < 4 < swapped, (error, swapped)  # the frame, scaled: not mirrored, not RGBA
    # the canvas shows it: Krita's projection was refreshed after the write
    projection = np.frombuffer(bytes(doc.pixelData(0, 0, 200, 100)), np.uint8).reshape(100, 200, 4)
    assert (projection[:, 50:150] == inside).all() and (projection[:, :50] == 255).all()


def test_keep_as_layer_adds_an_unlocked_layer_in_one_undo_step(panel, demo_daemon, new_doc):
    doc = new_doc(96, 64)
    p = panel()
    type_prompt(p, demo_daemon, "keep this one")
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


def test_keep_lands_next_to_the_reference_on_the_paintings_side(panel, demo_daemon, new_doc):
    """With the reference layer dragged under the painting (the lowest layer), Keep puts the frame
    just above it, under the painting: Krita's addChildNode only places a layer above another (or
    on top), so "just under" a lowest layer is not one undoable step (README, "Keep as layer")."""
    doc = new_doc(96, 64)
    p = panel()
    type_prompt(p, demo_daemon, "keep this one, under my painting")
    doc.drag_layer(doc.nodeByName(REFERENCE_NAME), 0)
    p.keep.click()
    name = f"turbo-bridge frame {p.controller.current.seq}"
    assert [n.name() for n in doc.rootNode().childNodes()] == [REFERENCE_NAME, name, "Background"]
    assert doc.undo_texts()[-1] == "Add Layer"
    KRITA.action("edit_undo").trigger()
    assert [n.name() for n in doc.rootNode().childNodes()] == [REFERENCE_NAME, "Background"]


def test_frames_follow_the_active_document(panel, demo_daemon, new_doc):
    first = new_doc(64, 64)
    p = panel()
    type_prompt(p, demo_daemon, "first document")
    shown_in_first = layer_bytes(first).copy()
    second = new_doc(64, 64)
    p.controller.document_changed()  # what the docker's canvasChanged does on a view switch
    pump(lambda: not p.controller._timer.isActive(), what="the view switch")
    assert second.nodeByName(REFERENCE_NAME) is None  # no layer until a frame comes
    type_prompt(p, demo_daemon, "second document")
    assert (layer_bytes(second) == daemon_frame_bgra(demo_daemon, p.controller.current.seq)).all()
    assert (layer_bytes(first) == shown_in_first).all()


def test_a_frame_that_came_while_no_document_was_active_goes_into_the_next_one(panel, demo_daemon, new_doc):
    """Krita starts with no document: the docker connects and gets frames before any view opens
    (in real Krita, also mid view switch). The newest one must reach the document that opens,
    without waiting for another frame: none may come (nothing else changed)."""
    KRITA.setActiveDocument(None)
    p = panel()
    p.prompt.setPlainText("before any document")
    pump(lambda: demo_daemon.client.params()["prompt"] == "before any document", what="the prompt")
    version = demo_daemon.client.params()["version"]
    newest = demo_daemon.client.frame_of_version(version)
    pump(lambda: p.controller._pending is not None and p.controller._pending.seq == newest.seq
         and not p.controller._timer.isActive(), what="that frame waiting for a document (tried: none active)")
    assert p.controller.current is None
    doc = new_doc(64, 64)
    p.controller.document_changed()  # what the docker's canvasChanged does when the view opens
    pump(lambda: settled(p, demo_daemon), what="the waiting frame in the new document")
    assert p.controller.current.seq == newest.seq
    assert (layer_bytes(doc) == daemon_frame_bgra(demo_daemon, newest.seq)).all()


def test_frames_wait_while_a_stroke_runs(panel, demo_daemon, new_doc):
    doc = new_doc(64, 64)
    p = panel()
    type_prompt(p, demo_daemon, "before the stroke")
    before, writes, refreshes = layer_bytes(doc).copy(), doc.pixel_writes, doc.refreshes
    doc.stroke_running = True
    p.prompt.setPlainText("during the stroke")
    pump(lambda: p.controller._pending is not None and p.controller.deferred > 0, what="a deferred frame")
    assert (layer_bytes(doc) == before).all() and (doc.pixel_writes, doc.refreshes) == (writes, refreshes)
    doc.stroke_running = False
    pump(lambda: settled(p, demo_daemon), what="the frame after the stroke")
    assert (layer_bytes(doc) == daemon_frame_bgra(demo_daemon, p.controller.current.seq)).all()
    assert doc.refreshes == refreshes + 1  # frames queued meanwhile: one write, one refresh


def test_typing_before_the_connection_answers_is_kept(panel, demo_daemon, new_doc):
    """The worker reads the daemon's parameters while the user may already be typing: showing
    that snapshot must not put the old prompt back into the field (nor into what Live sends)."""
    new_doc(64, 64)
    demo_daemon.client.patch({"prompt": "the daemon's prompt"})
    p = panel()  # connecting; its answer is handled on this thread, after what follows
    p.live.setChecked(False)
    p.prompt.setPlainText("typed while connecting")
    pump(lambda: p.controller.connection is not None, what="the connection")
    QtWidgets.QApplication.processEvents()
    assert p.prompt.toPlainText() == "typed while connecting"
    assert demo_daemon.client.params()["prompt"] == "the daemon's prompt"  # Live off: not sent
    p.live.setChecked(True)  # catches up with the docker
    pump(lambda: demo_daemon.client.params()["prompt"] == "typed while connecting", what="the typed prompt")
    pump(lambda: settled(p, demo_daemon), what="its frame")


def test_a_burst_of_changes_is_one_request_with_the_newest_values(qapp, demo_daemon):
    sender = ParamSender(demo_daemon.url, Signals())
    for i in range(100):  # typed before the sender's first request goes out
        sender.submit({"prompt": "x" * (i + 1), "seed": i})
    sender.start()
    try:
        pump(lambda: sender.sent == 1, what="the request")
        time.sleep(0.2)
        assert sender.sent == 1
        params = demo_daemon.client.params()
        assert params["prompt"] == "x" * 100 and params["seed"] == 99
    finally:
        sender.stop()


def test_opacity_slider_sets_the_layer_and_refreshes(panel, demo_daemon, new_doc):
    doc = new_doc(64, 64)
    p = panel()
    type_prompt(p, demo_daemon, "opacity")
    refreshes = doc.refreshes
    p.opacity.setValue(25)
    pump(lambda: doc.refreshes > refreshes, what="a refresh")
    assert doc.nodeByName(REFERENCE_NAME).opacity() == 64  # 25% of 255
    assert KRITA.readSetting("turbo_bridge", "opacity", "") == "25"


def test_live_off_sends_nothing_and_on_catches_up(panel, demo_daemon, new_doc):
    new_doc(64, 64)
    p = panel()
    type_prompt(p, demo_daemon, "live")
    p.live.setChecked(False)
    p.prompt.setPlainText("typed while not live")
    p.seed.setValue(4242)
    time.sleep(0.3)
    pump(lambda: True)
    assert demo_daemon.client.params()["prompt"] == "live"
    p.live.setChecked(True)
    pump(lambda: demo_daemon.client.params()["prompt"] == "typed while not live", what="catch-up")
    assert demo_daemon.client.params()["seed"] == 4242
    pump(lambda: settled(p, demo_daemon), what="the caught-up frame")


def test_canvas_as_input_sends_the_painting_without_the_reference_layer(panel, demo_daemon, new_doc):
    doc = new_doc(64, 64)
    p = panel()
    type_prompt(p, demo_daemon, "canvas input")
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
    pump(lambda: demo_daemon.client.health()["input"]["digest"] == expected, what="the painting as input")
    assert demo_daemon.client.params()["strength"] == 0.75 and demo_daemon.client.health()["input"]["active"]
    assert reference.visible() and doc.undo_texts() == undo  # shown again; no undo steps
    doc.selection_box = (8, 16, 32, 24)  # only the selection's part
    pump(lambda: demo_daemon.client.health()["input"]["digest"] ==
         InputImage.from_pixels(painting[16:40, 8:40][..., [2, 1, 0, 3]]).digest, what="the selection")
    doc.selection_box = None
    captures = p.controller.feed.captures
    doc.stroke_running = True  # never read the canvas during a stroke
    time.sleep(0.5)
    pump(lambda: True)
    assert p.controller.feed.captures == captures
    doc.stroke_running = False
    p.input_live.setChecked(False)
    pump(lambda: not demo_daemon.client.health()["input"]["present"], what="the input dropped")
    assert p.controller._input.sent >= 2


def test_canvas_input_is_flattened_over_white_and_fitted_to_the_frame():
    from turbo_bridge.canvas import Capture, prepared

    clear = np.zeros((40, 80, 4), np.uint8)  # transparent: paper
    clear[:, :40] = (10, 20, 30, 255)
    out = prepared(Capture(clear.tobytes(), 80, 40), (64, 64))
    assert out.shape == (32, 64, 4)  # fitted into the frame size, aspect kept
    assert (out[:, -8:, :3] == 255).all() and (out[:, :16] == (30, 20, 10, 255)).all()


def test_a_document_that_is_not_8bit_rgba_is_refused_with_a_hint(panel, demo_daemon, new_doc):
    doc = new_doc(64, 64, depth="U16")
    p = panel()
    p.prompt.setPlainText("sixteen bits")
    pump(lambda: "8-bit RGBA" in p.status.text(), what="the refusal")
    assert "Convert Image Color Space" in p.status.text()
    assert doc.nodeByName(REFERENCE_NAME) is None


def test_negative_prompt_and_lora_sliders(panel, demo_daemon, new_doc, cache_dir):
    torch = pytest.importorskip("torch")
    from bridge.pipeline.loading.loader import load_pipeline
    from lora_files import lora_layers, write_diffusers

    folder = Path(cache_dir) / "loras"  # the daemon's default --lora-dir (TURBO_BRIDGE_CACHE)
    folder.mkdir(exist_ok=True)
    for i, name in enumerate(("kr_ink", "kr_paper")):
        if not (folder / f"{name}.safetensors").exists():
            write_diffusers(lora_layers(load_pipeline("demo", "cpu", torch.float32, cache_dir), seed=50 + i,
                                        text=False), folder / f"{name}.safetensors")
    new_doc(64, 64)
    p = panel()
    pump(lambda: p.controller.connection is not None, what="the connection")
    QtWidgets.QApplication.processEvents()
    assert {"kr_ink", "kr_paper"} <= set(p.lora_sliders) and p.lora_sliders["kr_ink"].value() == 0
    p.negative_prompt.setText("blurry")
    pump(lambda: demo_daemon.client.params()["negative_prompt"] == "blurry", what="the negative prompt")
    p.lora_sliders["kr_ink"].setValue(75)
    p.lora_sliders["kr_paper"].setValue(-50)  # merged per name with the first, even if not sent yet
    pump(lambda: demo_daemon.client.params()["loras"] == {"kr_ink": 0.75, "kr_paper": -0.5}, what="the LoRA weights")
    p.lora_sliders["kr_ink"].setValue(0)
    p.lora_sliders["kr_paper"].setValue(0)
    pump(lambda: demo_daemon.client.params()["loras"] == {}, what="the LoRAs off")


def test_seamless_and_record(panel, demo_daemon, new_doc):
    new_doc(64, 64)
    client = demo_daemon.client
    client.patch({"tiling": "x"})  # set by another tool: shown on connect
    p = panel()
    pump(lambda: p.controller.connection is not None, what="the connection")
    QtWidgets.QApplication.processEvents()
    assert p.seamless.isChecked()
    p.seamless.setChecked(False)
    pump(lambda: client.params()["tiling"] == "none", what="tiling off")
    p.seamless.setChecked(True)
    pump(lambda: client.params()["tiling"] == "xy", what="tiling xy")
    p.record.click()
    pump(lambda: p.controller.recording and client.record()["recording"], what="recording")
    p.seed.setValue(p.seed.value() + 1)  # a frame to record
    pump(lambda: client.record()["frames"] >= 1, what="a recorded frame")
    p.record.click()
    pump(lambda: not p.controller.recording, what="the recording to stop")
    files = client.record()["files"]
    assert files and p.status.text().splitlines()[0] == f"recorded {files[-1]}" and p.record.text() == "Record"
    p.controller.set_recording(False)  # stop without start: the daemon's reason shows
    pump(lambda: "not recording" in p.status.text(), what="the refusal")
    client.patch({"tiling": "none"})


def test_each_document_drives_its_own_channel(panel, demo_daemon, new_doc):
    first = new_doc(64, 64)
    p = panel()
    type_prompt(p, demo_daemon, "the main document")  # the first document: channel main
    second = new_doc(64, 64)
    p.controller.document_changed()
    p.channel.setText("sketch")
    p.pick_channel()  # editingFinished: this document's channel, created on the demo_daemon at connect
    sketch = HttpClient(demo_daemon.client.base_url, channel="sketch")
    pump(lambda: p.controller.connection is not None and "sketch" in p.controller.connection.transport,
         what="the connection to channel sketch's segment")
    assert p.controller.connection.transport == f"shared memory {demo_daemon.shm_name + '.sketch'!r}"
    p.prompt.setPlainText("only in the sketch")
    pump(lambda: sketch.params()["prompt"] == "only in the sketch", what="the prompt on channel sketch")
    assert demo_daemon.client.params()["prompt"] == "the main document"  # main untouched
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
         f"shared memory {demo_daemon.shm_name!r}", what="the connection back on main")
    # Krita hands out a new Document wrapper on every activeDocument() call: the second document
    # must still be known as channel sketch's when it comes back (the docker shows it, too)
    KRITA.setActiveDocument(second)
    p.window_canvas_changed()
    assert p.controller.channel == "sketch" and p.channel.text() == "sketch"
    pump(lambda: p.controller.connection is not None and "sketch" in p.controller.connection.transport,
         what="the connection back on channel sketch")


def test_a_closed_documents_channel_is_forgotten(panel, demo_daemon, new_doc):
    """Channels are kept per open document: closing one drops its entry (wrappers of a closed
    document would otherwise pile up for the whole Krita session)."""
    new_doc(64, 64)
    p = panel()
    doc = new_doc(64, 64)
    p.controller.document_changed()
    p.controller.set_channel("closing")
    assert len(p.controller.channels) == 1
    doc.close()
    other = new_doc(64, 64)
    p.controller.document_changed()
    assert p.controller.channel == "main"
    p.controller.set_channel("kept")  # setting one drops the entries of documents that closed
    assert len(p.controller.channels) == 1 and p.controller.channels.get(other) == "kept"
