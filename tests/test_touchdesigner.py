"""The TouchDesigner plugin against a stand-in of TD's Python API and a real daemon (demo model).

TouchDesigner has no Linux build, so ``td_standin`` plays TD (its checks are tested first); the
daemon is a real ``python -m bridge serve`` process: frames cross real shared memory, control
and feedback cross real UDP, remote frames real HTTP.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pythonosc.udp_client import SimpleUDPClient

import td_standin
from bridge.client import HttpClient, parse_osc_message
from bridge.core.frame import Frame
from bridge.core.params import Params
from bridge.core.scene import InputImage
from bridge.engine.sinks.shm import ShmWriter
from conftest import unique_shm_name

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "plugins" / "touchdesigner"
SETUP_SCRIPT = (PLUGIN_DIR / "setup_network.py").read_text()
sys.path.insert(0, str(PLUGIN_DIR))
from turbo_bridge_td import inputs  # noqa: E402
from turbo_bridge_td import session as tb_session  # noqa: E402


# -- the stand-in checks what TouchDesigner checks ------------------------------------------
def test_copy_numpy_array_accepts_and_rejects_like_touchdesigner():
    td = td_standin.TouchDesigner()
    top = td.project.create(td_standin.OP_TYPES["scriptTOP"], "t")
    arrays = {}
    top.par.callbacks.eval().text = "def onCook(scriptOp):\n    scriptOp.copyNumpyArray(ARRAY)\n"
    module = top.par.callbacks.eval().module
    good = [np.zeros((4, 6, 4), np.uint8), np.zeros((4, 6, 3), np.uint16), np.zeros((4, 6, 1), np.float32),
            np.zeros((4, 6), np.float32)]
    for array in good:
        module.ARRAY = array
        top.cook(force=True)
        arrays[array.dtype.name] = (top.width, top.height)
    assert top.copies == 4 and arrays["uint8"] == (6, 4)
    bad = [np.zeros((4, 6, 4), np.float64), np.zeros((4, 6, 4), np.int32), np.zeros((4, 6, 5), np.uint8),
           np.zeros((24,), np.uint8), np.zeros((1, 4, 6, 4), np.uint8), np.zeros((0, 6, 4), np.uint8),
           [[0, 0], [0, 0]]]
    for array in bad:
        module.ARRAY = array
        with pytest.raises(td_standin.TdError, match="copyNumpyArray"):
            top.cook(force=True)
    with pytest.raises(td_standin.TdError, match="only during the TOP's cook"):
        top.copyNumpyArray(np.zeros((2, 2, 4), np.uint8))
    top.par.modoutsidecook = True
    top.copyNumpyArray(np.full((2, 2, 4), 255, np.uint8))
    assert top.numpyArray().shape == (2, 2, 4) and top.numpyArray().dtype == np.float32
    assert top.numpyArray().max() == 1.0 and top.copies == 5


def test_custom_parameters_follow_touchdesigner_rules_and_threads_are_refused():
    td = td_standin.TouchDesigner()
    comp = td.project.create(td_standin.OP_TYPES["baseCOMP"], "c")
    page = comp.appendCustomPage("Page")
    for bad in ("prompt", "My_par", "MyPar", "1st"):
        with pytest.raises(td_standin.TdError, match="invalid custom parameter name"):
            page.appendStr(bad)
    assert [p.name for p in page.appendInt("Ports", size=3)] == ["Ports1", "Ports2", "Ports3"]
    steps = page.appendInt("Steps")[0]
    steps.min, steps.clampMin, steps.max, steps.clampMax = 1, True, 4, True
    comp.par.Steps = 9
    assert comp.par.Steps.eval() == 4
    with pytest.raises(AttributeError):
        comp.par.Nosuchpar  # noqa: B018
    errors = []
    worker = threading.Thread(target=lambda: errors.append(_raises(lambda: comp.par.Steps.eval())))
    worker.start()
    worker.join()
    assert errors == [True]  # TD objects are main-thread only


def _raises(action) -> bool:
    try:
        action()
    except td_standin.TdError:
        return True
    return False


# -- a real daemon, shared by the tests below -------------------------------------------------
class Daemon:
    def __init__(self, proc, http_port: int, osc_port: int, shm_name: str):
        self.proc, self.http_port, self.osc_port, self.shm_name = proc, http_port, osc_port, shm_name
        self.client = HttpClient(f"http://127.0.0.1:{http_port}")
        self.log: list[str] = []


@pytest.fixture(scope="module")
def daemon(cache_dir):
    name = unique_shm_name()
    env = {**os.environ, "TURBO_BRIDGE_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--model", "demo", "--http-port", "0",
                             "--osc-port", "0", "--shm-name", name, "--width", "64", "--height", "64",
                             "--max-size", "256"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=env)
    lines, match, deadline = [], None, time.monotonic() + 120
    while match is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"ready: http://127\.0\.0\.1:(\d+)/v1/  OSC udp 127\.0\.0\.1:(\d+)", line)
    if match is None:
        proc.kill()
        pytest.fail("daemon did not start:\n" + "".join(lines))
    d = Daemon(proc, int(match.group(1)), int(match.group(2)), name)
    d.log = lines
    drain = threading.Thread(target=lambda: d.log.extend(proc.stderr), daemon=True)
    drain.start()
    d.client.frame(0, 30)  # the first frame is out
    yield d
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


CHEAP = {"steps": 1, "guidance": 0.0, "width": 64, "height": 64}  # ~15 ms a frame on CPU


@pytest.fixture(autouse=True)
def idle_daemon(request):
    """Each plugin test starts with cheap params, their frame rendered: an idle daemon."""
    if "daemon" not in request.fixturenames:
        yield
        return
    daemon = request.getfixturevalue("daemon")
    version = daemon.client.patch(CHEAP)["version"]
    frame = daemon.client.frame(after=0, timeout=30)
    while frame.version < version:
        frame = daemon.client.frame(after=frame.seq, timeout=30)
    yield


@pytest.fixture
def td():
    td = td_standin.TouchDesigner()
    yield td
    sources = [s.source for s in tb_session._SESSIONS.values() if s.source is not None]
    td.exit()  # onExit closes every session
    for source in sources:
        if hasattr(source, "join"):
            assert source.join(timeout=10), "HTTP worker did not stop"


@pytest.fixture
def net(td, daemon):
    """The network the setup script builds, pointed at the test daemon, after the project starts."""
    td.textport(SETUP_SCRIPT, TB_PLUGIN_DIR=str(PLUGIN_DIR), TB_SHM_NAME=daemon.shm_name,
                TB_PORTS=(daemon.http_port, daemon.osc_port, free_udp_port()))
    td.start()
    return td.project.op("turbo_bridge")


def run_until(td, predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        td.run_frame()
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"{what} not met within {timeout} s")


def status(comp, key: str) -> str | None:
    cell = comp.op("status")[key, 1]
    return None if cell is None else cell.val


def shown_frame(top) -> np.ndarray:
    """The TOP's image as TouchDesigner holds it (rows bottom-first), back to uint8."""
    return np.round(top.numpyArray() * 255).astype(np.uint8)


def changes_sent(out) -> list[bytes]:
    """What the OSC Out DAT sent, less the periodic /bridge/subscribe."""
    return [d for d in out.sent if not d.startswith(b"/bridge/subscribe")]


def shown_seq(comp, version: int | None = None) -> int:
    """The seq of the frame the TOP shows once it is the newest taken (of ``version``), else 0."""
    latest = tb_session.session_for(comp).latest
    copied = status(comp, "copied seq")
    if latest is None or copied is None or int(copied) != latest.seq:
        return 0
    return latest.seq if version is None or latest.version == version else 0


def wait_for_version(td, daemon, version: int) -> dict:
    return run_until(td, lambda: (p := daemon.client.params())["version"] >= version and p,
                     what=f"params version {version}")


# -- the plugin ------------------------------------------------------------------------------
def test_setup_script_builds_the_whole_network(net, daemon):
    comp = net
    kinds = {child.name: child.OPType for child in comp.children}
    assert kinds == {"frame": "scriptTOP", "frame_callbacks": "textDAT", "out1": "outTOP", "osc_out": "oscoutDAT",
                     "osc_in": "oscinDAT", "osc_in_callbacks": "textDAT", "cues": "tableDAT",
                     "status": "tableDAT", "frame_exec": "executeDAT", "par_exec": "parameterexecuteDAT"}
    assert {p.name for p in comp.customPars} >= {"Prompt", "Seed", "Guidance", "Steps", "Width", "Height", "Live",
                                                 "Host", "Ports1", "Ports2", "Ports3", "Source", "Shmname",
                                                 "Send", "Cue", "Cuenext", "Cueprev", "Cuego"}
    assert [page.name for page in comp.customPages] == ["Bridge", "Connection", "Input", "Cues"]
    assert (comp.par.Ports1.eval(), comp.par.Ports2.eval()) == (daemon.http_port, daemon.osc_port)
    assert comp.par.Live.eval() is True and comp.par.Steps.eval() == 1 and comp.par.Source.eval() == "shm"
    frame = comp.op("frame")
    assert frame.par.callbacks.eval() is comp.op("frame_callbacks")
    assert [p.name for p in frame.customPars] == ["Control"]  # onSetupParameters ran
    assert comp.op("out1").inputs == [frame]
    assert comp.op("osc_in").par.callbacks.eval() is comp.op("osc_in_callbacks")
    assert (comp.op("osc_out").par.address.eval(), comp.op("osc_out").par.port.eval()) == ("127.0.0.1", daemon.osc_port)
    assert comp.op("osc_in").par.port.eval() == comp.par.Ports3.eval()
    assert comp.op("par_exec").par.op.eval() is comp
    assert all(comp.op("frame_exec").par[p].eval() for p in ("start", "framestart", "exit"))
    cues = comp.op("cues")
    assert [cues[0, c].val for c in range(cues.numCols)] == ["name", "prompt", "seed", "guidance", "steps",
                                                             "width", "height"]
    assert cues.numRows == 4
    with pytest.raises(ValueError, match="already exists"):
        net.env.textport(SETUP_SCRIPT, TB_PLUGIN_DIR=str(PLUGIN_DIR))


def test_top_receives_exactly_the_daemon_frame_flipped(td, net, daemon):
    top = net.op("frame")
    version = daemon.client.patch({"seed": 1234, "width": 64, "height": 64})["version"]
    seq = run_until(td, lambda: shown_seq(net, version), what="frame copied")
    frame = daemon.client.frame(after=seq - 1, timeout=5)
    assert frame.seq == seq and frame.version == version
    shown = shown_frame(top)
    assert shown.shape == (64, 64, 4) and (top.width, top.height) == (64, 64)
    assert not np.array_equal(frame.pixels, frame.pixels[::-1])  # the flip is visible in this frame
    assert np.array_equal(shown, frame.pixels[::-1])  # TD's first row is the image's bottom row


def test_no_new_frame_means_no_cook_and_no_copy(td, net, daemon):
    top = net.op("frame")
    run_until(td, lambda: shown_seq(net) == daemon.client.health()["frame_seq"], what="newest frame shown")
    cooks, copies = top.cook_count, top.copies
    for _ in range(30):
        td.run_frame()
    assert (top.cook_count, top.copies) == (cooks, copies)  # idle frames: not even a cook
    top.cook(force=True)  # TD cooks it for another reason: nothing new, nothing copied
    assert (top.cook_count, top.copies) == (cooks + 1, copies)
    daemon.client.patch({"seed": 99})
    run_until(td, lambda: top.copies > copies, what="the next frame")
    assert top.cook_count - (cooks + 1) == top.copies - copies  # every forced cook copied a frame


def test_osc_controls_change_the_daemon_params(td, net, daemon):
    before = daemon.client.params()["version"]
    net.par.Prompt = "a cat on a windowsill"
    net.par.Seed = 42
    net.par.Guidance = 1.5
    net.par.Steps = 2
    net.par.Width, net.par.Height = 128, 96
    params = run_until(td, lambda: (p := daemon.client.params())["height"] == 96 and p, what="size applied")
    assert (params["prompt"], params["seed"], params["guidance"], params["steps"], params["width"]) == \
        ("a cat on a windowsill", 42, 1.5, 2, 128)
    assert params["version"] > before
    addresses = {parse_osc_message(d)[0] for d in changes_sent(net.op("osc_out"))}
    assert addresses == {"/bridge/prompt", "/bridge/seed", "/bridge/guidance", "/bridge/steps", "/bridge/size"}
    net.par.Prompt = "über den Wolken"  # not ASCII: goes as JSON in /bridge/params
    run_until(td, lambda: daemon.client.params()["prompt"] == "über den Wolken", what="unicode prompt")


def test_live_off_holds_changes_and_send_applies_them_as_one_change(td, net, daemon):
    net.par.Live = False
    td.run_frame()
    out = net.op("osc_out")
    sent, version = len(changes_sent(out)), daemon.client.params()["version"]
    net.par.Prompt, net.par.Seed, net.par.Steps = "held back", 7, 3
    net.par.Width, net.par.Height = 64, 64  # within this daemon's --max-size 256
    for _ in range(10):
        td.run_frame()
    assert len(changes_sent(out)) == sent and daemon.client.params()["version"] == version
    net.par.Send.pulse()
    params = wait_for_version(td, daemon, version + 1)
    assert params["version"] == version + 1  # all fields, one change
    assert (params["prompt"], params["seed"], params["steps"]) == ("held back", 7, 3)
    net.par.Live = True


def test_bundle_is_one_atomic_change(td, net, daemon):
    version = daemon.client.params()["version"]
    tb_session.session_for(net).controller.send_changes({"prompt": "a lion", "seed": 9, "guidance": 0.5},
                                                        bundle=True)
    params = wait_for_version(td, daemon, version + 1)
    assert params["version"] == version + 1 and (params["prompt"], params["seed"]) == ("a lion", 9)


def test_feedback_frames_and_errors_reach_the_status_table(td, net, daemon):
    version = daemon.client.patch({"seed": 31337})["version"]
    run_until(td, lambda: status(net, "params version") == str(version), what="/bridge/frame feedback")
    assert status(net, "frame seq") == str(daemon.client.health()["frame_seq"])
    assert float(status(net, "render ms")) > 0
    net.par.Width = 100  # not a multiple of 8: the daemon refuses it
    message = run_until(td, lambda: status(net, "last error"), what="/bridge/error feedback")
    assert "multiple of 8" in message


def test_cues_advance_by_pulse_and_by_osc(td, net, daemon):
    cues = net.op("cues")
    prompts = {i: cues[i, "prompt"].val for i in range(1, cues.numRows)}
    version = daemon.client.params()["version"]
    net.par.Cuenext.pulse()
    params = wait_for_version(td, daemon, version + 1)
    assert (params["prompt"], params["seed"], params["version"]) == (prompts[1], 1, version + 1)
    assert net.par.Cue.eval() == 1 and net.par.Prompt.eval() == prompts[1] and status(net, "cue") == "1 opening"
    remote = SimpleUDPClient("127.0.0.1", net.par.Ports3.eval())  # a show controller
    remote.send_message("/cue/next", [])
    run_until(td, lambda: daemon.client.params()["prompt"] == prompts[2], what="cue 2 by OSC")
    remote.send_message("/cue/go", "night")
    params = run_until(td, lambda: (p := daemon.client.params())["prompt"] == prompts[3] and p, what="cue night")
    assert params["seed"] == 7 and net.par.Cue.eval() == 3
    remote.send_message("/cue/next", [])  # already the last cue: stays
    remote.send_message("/cue/prev", [])
    run_until(td, lambda: net.par.Cue.eval() == 2 and daemon.client.params()["prompt"] == prompts[2],
              what="previous cue")
    sent = len(changes_sent(net.op("osc_out")))
    for _ in range(5):
        td.run_frame()  # the Cue / Prompt parameter echoes send nothing more
    assert len(changes_sent(net.op("osc_out"))) == sent
    net.par.Cue = 1  # typed into the parameter
    run_until(td, lambda: daemon.client.params()["prompt"] == prompts[1], what="cue typed by hand")
    remote.send_message("/cue/go", 9)
    assert "cue 9 does not exist" in run_until(td, lambda: status(net, "last error"), what="bad cue error")
    cues.appendRow(["huge seed", "", str(2**64 - 1), "", "", "", ""])  # beyond OSC integers: JSON
    remote.send_message("/cue/go", "huge seed")
    run_until(td, lambda: daemon.client.params()["seed"] == 2**64 - 1, what="cue with a 64-bit seed")


def test_remote_http_mode_shows_frames(td, net, daemon):
    net.par.Shmname = "no-such-segment"  # prove the frames come over HTTP
    net.par.Source = "http"
    top = net.op("frame")
    version = daemon.client.patch({"seed": 4242})["version"]
    seq = run_until(td, lambda: shown_seq(net, version), what="a frame over HTTP")
    assert status(net, "source") == f"HTTP http://127.0.0.1:{daemon.http_port}"
    assert np.array_equal(shown_frame(top), daemon.client.frame(after=seq - 1, timeout=5).pixels[::-1])


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


def test_remote_fetch_never_blocks_the_cook(td, net, daemon):
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


def test_input_top_reaches_the_daemon_through_shared_memory(td, net, daemon):
    """Send Input: the TOP's image (TD rows bottom-first, floats) becomes the daemon's input."""
    video = td.project.create(td_standin.OP_TYPES["scriptTOP"], "video")
    video.par.modoutsidecook = True
    picture = np.random.default_rng(9).integers(0, 256, (48, 64, 4), np.uint8)
    picture[..., 3] = 255
    video.copyNumpyArray(picture[::-1].copy())  # a TOP's first row is the image's bottom row
    net.par.Inputtop, net.par.Strength, net.par.Sendinput = video, 0.75, True
    digest = InputImage.from_pixels(picture).digest
    state = run_until(td, lambda: (s := daemon.client.health()["input"])["digest"] == digest and s,
                      what="the TOP's image as the daemon's input")
    assert state["source"] == "shm" and state["active"] and state["shm"] == inputs.segment_name(net)
    assert daemon.client.params()["strength"] == 0.75
    sender = tb_session.session_for(net).input
    written = sender.written
    for _ in range(20):
        td.run_frame()
    assert sender.written == written  # an unchanged TOP writes nothing
    picture[:8] = 0
    video.copyNumpyArray(picture[::-1].copy())
    run_until(td, lambda: daemon.client.health()["input"]["digest"] == InputImage.from_pixels(picture).digest,
              what="the changed image")
    net.par.Sendinput = False
    run_until(td, lambda: not daemon.client.health()["input"]["present"], what="input dropped")
    assert sender.writer is None and status(net, "input") == "off"


def test_built_plugin_folder_works_without_the_repository(tmp_path, daemon):
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
    result = subprocess.run([sys.executable, "-c", code, str(folder), daemon.shm_name], capture_output=True,
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


def test_a_component_per_channel_drives_and_shows_its_own_channel(td, net, daemon):
    net.par.Channel = "left"  # Connection page: this COMP now is channel left (created on the daemon)
    left = HttpClient(daemon.client.base_url, channel="left")
    run_until(td, lambda: status(net, "source") == f"shared memory {daemon.shm_name + '.left'!r}",
              what="the left channel's segment attached")
    main_before = daemon.client.params()
    net.par.Seed = 4242
    params = run_until(td, lambda: (p := left.params())["seed"] == 4242 and p, what="seed on channel left")
    assert daemon.client.params()["seed"] == main_before["seed"]  # main untouched
    addresses = {parse_osc_message(d)[0] for d in changes_sent(net.op("osc_out"))}
    assert "/bridge/ch/left/seed" in addresses and "/bridge/seed" not in addresses
    seq = run_until(td, lambda: shown_seq(net, params["version"]), what="a frame of channel left shown")
    frame = left.frame(after=seq - 1, timeout=5)
    assert frame.seq == seq and frame.seed == 4242
    assert np.array_equal(shown_frame(net.op("frame")), frame.pixels[::-1])


def test_the_feedback_subscription_is_renewed_well_within_its_expiry(net):
    from bridge.frontends.osc_subscriptions import TTL_S
    from turbo_bridge_td.control import RESUBSCRIBE_S

    assert RESUBSCRIBE_S * 4 <= TTL_S  # a few lost datagrams do not end the feedback
    controller, out = tb_session.session_for(net).controller, net.op("osc_out")
    subscribes = lambda: sum(d.startswith(b"/bridge/subscribe") for d in out.sent)  # noqa: E731
    start = time.monotonic() + 3600  # past any renewal already due
    controller.maybe_resubscribe(start)
    count = subscribes()
    controller.maybe_resubscribe(start + RESUBSCRIBE_S - 0.5)
    assert subscribes() == count
    controller.maybe_resubscribe(start + RESUBSCRIBE_S)
    assert subscribes() == count + 1
