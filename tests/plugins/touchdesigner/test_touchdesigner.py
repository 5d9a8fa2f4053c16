"""The TouchDesigner plugin's network and frames: the setup script, the Script TOP, the sources.

Against ``td_standin`` (TD has no Linux build) and a real demo_daemon (demo model); see td_harness.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import pythonosc
from pythonosc.udp_client import SimpleUDPClient

import td_standin
from bridge.client import HttpClient, parse_osc_message
from bridge.core.frame import Frame
from bridge.core.params import Params
from bridge.outputs.shm import ShmWriter
from conftest import unique_shm_name
from td_harness import PLUGIN_DIR, SETUP_SCRIPT, changes_sent, free_udp_port, run_until, shown_frame, shown_seq, status


def test_setup_script_builds_the_whole_network(net, demo_daemon):
    comp = net
    kinds = {child.name: child.OPType for child in comp.children}
    assert kinds == {"frame": "scriptTOP", "frame_callbacks": "textDAT", "out1": "outTOP", "osc_out": "oscoutDAT",
                     "osc_in": "oscinDAT", "osc_in_callbacks": "textDAT", "cues": "tableDAT",
                     "status": "tableDAT", "frame_exec": "executeDAT", "par_exec": "parameterexecuteDAT",
                     **{f"{role}_{kind}": f"{kind}TOP" for role in ("input", "control1", "control2", "style")
                        for kind in ("select", "fit")}}
    for role in ("input", "control1", "control2", "style"):  # each sent TOP: a Select wired into a Fit (Fill)
        fit = comp.op(f"{role}_fit")
        assert fit.inputs == [comp.op(f"{role}_select")] and str(fit.par.fit) == "fill" and not fit.par.resmult.eval()
    assert {p.name for p in comp.customPars} >= {"Prompt", "Seed", "Guidance", "Steps", "Width", "Height", "Live",
                                                 "Host", "Ports1", "Ports2", "Ports3", "Source", "Shmname",
                                                 "Send", "Cue", "Cuenext", "Cueprev", "Cuego"}
    assert [page.name for page in comp.customPages] == ["Bridge", "Connection", "Input", "Control", "Style", "Output",
                                                        "Cues"]
    assert {"Tiling", "Record"} <= {p.name for p in comp.customPars}
    assert {"Negprompt", "Lora1name", "Lora4weight", "Styletop", "Stylescale"} <= {p.name for p in comp.customPars}
    assert (comp.par.Ports1.eval(), comp.par.Ports2.eval()) == (demo_daemon.http_port, demo_daemon.osc_port)
    assert comp.par.Live.eval() is True and comp.par.Steps.eval() == 1 and comp.par.Source.eval() == "shm"
    frame = comp.op("frame")
    assert frame.par.callbacks.eval() is comp.op("frame_callbacks")
    assert [p.name for p in frame.customPars] == ["Control"]  # onSetupParameters ran
    assert frame.cook_count >= 1  # the setuppars pulse cooked it, with the status table already there
    assert comp.par.Seed.isString and comp.par.Seed.eval() == "0"  # exact to 2**64-1
    assert comp.op("out1").inputs == [frame]
    assert comp.op("osc_in").par.callbacks.eval() is comp.op("osc_in_callbacks")
    osc_out = comp.op("osc_out")
    assert (osc_out.par.address.eval(), osc_out.par.port.eval()) == ("127.0.0.1", demo_daemon.osc_port)
    assert comp.op("osc_in").par.port.eval() == comp.par.Ports3.eval()
    assert comp.op("par_exec").par.op.eval() is comp
    assert all(comp.op("frame_exec").par[p].eval() for p in ("start", "framestart", "exit"))
    cues = comp.op("cues")
    assert [cues[0, c].val for c in range(cues.numCols)] == ["name", "prompt", "seed", "guidance", "steps",
                                                             "width", "height"]
    assert cues.numRows == 4
    with pytest.raises(ValueError, match="already exists"):
        net.env.textport(SETUP_SCRIPT, TB_PLUGIN_DIR=str(PLUGIN_DIR))


@pytest.mark.parametrize("folder", ["checkout", "built"])
def test_setup_script_runs_in_an_interpreter_with_only_touchdesigners_path(tmp_path, folder):
    """README install option 1 in a Python that has no repository and no venv on its path: the
    script must put every folder the plugin imports from on sys.path before importing it (a
    checkout: the plugin and the repository root; a build.py folder: the plugin alone)."""
    repo = str(PLUGIN_DIR.parent.parent)
    plugin_dir = PLUGIN_DIR
    if folder == "built":
        subprocess.run([sys.executable, str(PLUGIN_DIR / "build.py"), "--out", str(tmp_path / "dist")], check=True,
                       capture_output=True)
        plugin_dir = tmp_path / "dist" / "turbo-bridge-touchdesigner"
    name = unique_shm_name()
    numpy_only, osc_only = tmp_path / "td-python", tmp_path / "osc"
    numpy_only.mkdir()
    osc_only.mkdir()
    numpy_dir = Path(np.__file__).parent
    for entry in (numpy_dir, numpy_dir.with_name("numpy.libs")):
        if entry.exists():
            (numpy_only / entry.name).symlink_to(entry)
    (osc_only / "pythonosc").symlink_to(Path(pythonosc.__file__).parent)
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (64, 64, 4), np.uint8)
    with ShmWriter(name, 256, 256) as writer:
        writer.publish(Frame(1, 1, Params(width=64, height=64), pixels, 1.0, time.time_ns()))
        done = subprocess.run([sys.executable, "-I", "-S", str(Path(td_standin.__file__).with_name("bare.py")),
                               str(Path(td_standin.__file__).parent.parent), str(osc_only), str(numpy_only),
                               str(plugin_dir), name, json.dumps([free_udp_port() for _ in range(3)])],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert not any("site-packages" in p or p == repo for p in report["path_before"])
    if folder == "checkout":
        assert set(report["added"]) == {str(plugin_dir), repo}
        assert report["client"].startswith(repo + "/bridge/client/")
    else:
        assert report["added"] == [str(plugin_dir)] and not report["bridge_importable"]
        assert report["client"].startswith(str(plugin_dir / "turbo_bridge_td" / "_vendor" / "client"))
    assert np.array_equal(np.array(report["shown"], np.uint8), pixels[::-1])  # the frame, flipped


def test_top_receives_exactly_the_daemon_frame_flipped(td, net, demo_daemon):
    top = net.op("frame")
    version = demo_daemon.client.patch({"seed": 1234, "width": 64, "height": 64})["version"]
    seq = run_until(td, lambda: shown_seq(net, version), what="frame copied")
    frame = demo_daemon.client.frame(after=seq - 1, timeout=5)
    assert frame.seq == seq and frame.version == version
    shown = shown_frame(top)
    assert shown.shape == (64, 64, 4) and (top.width, top.height) == (64, 64)
    assert not np.array_equal(frame.pixels, frame.pixels[::-1])  # the flip is visible in this frame
    assert np.array_equal(shown, frame.pixels[::-1])  # TD's first row is the image's bottom row


def test_idle_frames_cook_nothing_and_every_cook_shows_the_current_frame(td, net, demo_daemon):
    top = net.op("frame")
    run_until(td, lambda: shown_seq(net) == demo_daemon.client.health()["frame_seq"], what="newest frame shown")
    current = shown_frame(top)
    cooks, copies = top.cook_count, top.copies
    for _ in range(30):
        td.run_frame()
    assert (top.cook_count, top.copies) == (cooks, copies)  # idle frames: not even a cook
    net.op("status").appendRow(["note", "written by hand"])  # onCook reads no table: no re-cook
    td.run_frame()
    assert top.cook_count == cooks
    top.cook(force=True)  # TD cooks it for a reason of its own: the frame is copied again
    assert (top.cook_count, top.copies) == (cooks + 1, copies + 1)
    assert np.array_equal(shown_frame(top), current)
    top.par.Control = net.path  # something the cook read changed: TD re-cooks it, same picture
    td.run_frame()
    assert top.cook_count == cooks + 2 and np.array_equal(shown_frame(top), current)
    demo_daemon.client.patch({"seed": 99})
    run_until(td, lambda: shown_seq(net) == demo_daemon.client.health()["frame_seq"] and top.copies > copies + 2,
              what="the next frame")
    assert top.cook_count - cooks == top.copies - copies  # every cook copied a frame
    assert not np.array_equal(shown_frame(top), current)


def test_remote_http_mode_shows_frames(td, net, demo_daemon):
    net.par.Shmname = "no-such-segment"  # prove the frames come over HTTP
    net.par.Source = "http"
    top = net.op("frame")
    version = demo_daemon.client.patch({"seed": 4242})["version"]
    seq = run_until(td, lambda: shown_seq(net, version), what="a frame over HTTP")
    assert status(net, "source") == f"HTTP http://127.0.0.1:{demo_daemon.http_port}"
    assert np.array_equal(shown_frame(top), demo_daemon.client.frame(after=seq - 1, timeout=5).pixels[::-1])


class HangingHTTP:
    """Accepts requests and answers only when released: a daemon on a slow or stalled network."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.release, self.in_flight, self.answered = threading.Event(), 0, 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                self.in_flight += 1
                self.release.wait(30)
                try:
                    conn.sendall(b"HTTP/1.1 204 No Content\r\nX-Frame-Seq: 0\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                except OSError:
                    pass  # the client gave up waiting
                self.in_flight -= 1
                self.answered += 1


def test_remote_fetch_never_blocks_the_cook(td, net, demo_daemon):
    server = HangingHTTP()
    try:
        net.par.Ports1 = server.port
        net.par.Source = "http"
        top = net.op("frame")
        run_until(td, lambda: server.in_flight == 1, what="a request in flight")
        cooks = top.cook_count
        for _ in range(50):
            td.run_frame()
            top.cook(force=True)
        assert top.cook_count == cooks + 50 and server.in_flight == 1 and server.answered == 0
    finally:
        server.release.set()
        server.sock.close()


def test_built_plugin_folder_works_without_the_repository(tmp_path, demo_daemon):
    subprocess.run([sys.executable, str(PLUGIN_DIR / "build.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    folder = tmp_path / "turbo-bridge-touchdesigner"
    assert (tmp_path / "turbo-bridge-touchdesigner.zip").exists()
    code = (
        "import sys; sys.modules['bridge'] = None; sys.path.insert(0, sys.argv[1])\n"
        "from turbo_bridge_td import _client, inputs, network, session, top, sources\n"
        "assert _client.client.__file__.startswith(sys.argv[1]), _client.client.__file__\n"
        "src = sources.ShmSource(sys.argv[2]); frame = src.take(); src.close()\n"
        "assert frame.pixels.shape == (frame.height, frame.width, 4), frame.pixels.shape\n"
        "loaded = [m for m in ('torch', 'aiohttp', 'pythonosc', 'diffusers') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "print('ok', frame.seq)\n")
    result = subprocess.run([sys.executable, "-c", code, str(folder), demo_daemon.shm_name], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("ok"), result.stderr


def test_a_restarted_daemons_new_segment_is_reattached(td):
    """A restarted daemon unlinks its segment and makes a new one; feedback tells the plugin."""
    name, feedback = unique_shm_name(), free_udp_port()
    td.textport(SETUP_SCRIPT, TB_PLUGIN_DIR=str(PLUGIN_DIR), TB_SHM_NAME=name,
                TB_PORTS=(free_udp_port(), free_udp_port(), feedback))
    comp, top = td.project.op("turbo_bridge"), td.project.op("turbo_bridge/frame")
    rng = np.random.default_rng(5)
    frames = [Frame(i, i, Params(width=64, height=64), rng.integers(0, 256, (64, 64, 4), np.uint8), 1.0,
                    time.time_ns()) for i in (1, 2, 3)]
    with ShmWriter(name, 256, 256) as first:
        for frame in frames:
            first.publish(frame)
        run_until(td, lambda: shown_seq(comp) == 3, what="the first daemon's frame")
    restarted = Frame(1, 1, Params(width=64, height=64), rng.integers(0, 256, (64, 64, 4), np.uint8), 1.0,
                      time.time_ns())
    with ShmWriter(name, 256, 256) as second:
        second.publish(restarted)
        SimpleUDPClient("127.0.0.1", feedback).send_message("/bridge/frame", [1, 1, 1.0])
        run_until(td, lambda: shown_seq(comp) == 1, timeout=5, what="the new segment's frame")
        assert np.array_equal(shown_frame(top), restarted.pixels[::-1])


def test_a_component_per_channel_drives_and_shows_its_own_channel(td, net, demo_daemon):
    net.par.Channel = "left"  # Connection page: this COMP now is channel left (created on the daemon)
    left = HttpClient(demo_daemon.client.base_url, channel="left")
    run_until(td, lambda: status(net, "source") == f"shared memory {demo_daemon.shm_name + '.left'!r}",
              what="the left channel's segment attached")
    main_before = demo_daemon.client.params()
    net.par.Seed = 4242
    params = run_until(td, lambda: (p := left.params())["seed"] == 4242 and p, what="seed on channel left")
    assert demo_daemon.client.params()["seed"] == main_before["seed"]  # main untouched
    addresses = {parse_osc_message(d)[0] for d in changes_sent(net.op("osc_out"))}
    assert "/bridge/ch/left/seed" in addresses and "/bridge/seed" not in addresses
    seq = run_until(td, lambda: shown_seq(net, params["version"]), what="a frame of channel left shown")
    frame = left.frame(after=seq - 1, timeout=5)
    assert frame.seq == seq and frame.seed == 4242
    assert np.array_equal(shown_frame(net.op("frame")), frame.pixels[::-1])
