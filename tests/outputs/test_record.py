"""Recording into H.264 MP4: read back with ffprobe (frame count, size, timestamps), and the bad cases."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import aiohttp
import numpy as np
import pytest
from pythonosc.udp_client import SimpleUDPClient

from bridge.core.frame import Frame
from bridge.core.params import Params
from bridge.outputs import mp4, record
from bridge.outputs.record import Recorder, RecordingError, RecordOptions
from conftest import null_factory
from recordings import frames_flow, post, probe, settle
from renderers import noise_factory

pytestmark = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="needs ffprobe (Debian ffmpeg)")


def frame(seq: int, published_ns: int, width=64, height=48, seed=0) -> Frame:
    pixels = np.random.default_rng(seed or seq).integers(0, 256, (height, width, 4), dtype=np.uint8)
    return Frame(seq, seq, Params(width=width, height=height), pixels, 1.0, published_ns)


def wait_until(predicate, timeout=60.0):
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        done.wait(0.01)
    raise AssertionError("condition not met in time")


def started(rec: Recorder) -> Recorder:
    """The recorder as the daemon starts it (an output), then recording."""
    rec.start(lambda message: None)
    rec.start_recording()
    return rec


def test_frames_at_their_publication_times_and_a_new_file_per_size(tmp_path):
    # No still-frame repeat: a busy machine's pause between two frames must not add one here.
    rec = started(Recorder(tmp_path, RecordOptions(repeat_after_s=None)))
    base_ns = 1_700_000_000_000_000_000
    offsets_ms = [0, 16, 33, 250, 251, 900]  # irregular on purpose: variable frame rate
    for i, ms in enumerate(offsets_ms):
        rec.publish(frame(i + 1, base_ns + ms * 1_000_000))
        wait_until(lambda: rec.state()["frames"] == i + 1)  # no drops: this test is about timing
    rec.publish(frame(7, base_ns + 1_000_000_000, width=80, height=64))
    rec.publish(frame(8, base_ns + 1_040_000_000, width=80, height=64))
    rec.stop_recording().join()
    state = rec.state()
    assert state["recording"] is False and state["error"] is None and state["dropped"] == 0
    first, second = (tmp_path / name for name in state["session_files"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, second.name])  # no .partial
    a, b = probe(first), probe(second)
    assert (a["codec_name"], a["width"], a["height"], a["pix_fmt"]) == ("h264", 64, 48, "yuv420p")
    assert a["times"] == pytest.approx([ms / 1000 for ms in offsets_ms], abs=1 / 90000)
    assert (b["width"], b["height"]) == (80, 64) and b["times"] == pytest.approx([0, 0.04], abs=1 / 90000)


def test_a_slow_encoder_drops_frames_and_never_blocks_publish(tmp_path, monkeypatch):
    release, writing = threading.Event(), threading.Event()
    real_write = mp4.Mp4File.write

    def slow_write(self, pixels, ns):
        writing.set()
        release.wait(60)
        real_write(self, pixels, ns)

    monkeypatch.setattr(mp4.Mp4File, "write", slow_write)
    rec = started(Recorder(tmp_path, RecordOptions(queue_frames=2, repeat_after_s=None)))
    rec.publish(frame(1, 1_000_000_000))
    assert writing.wait(60)  # the worker holds frame 1; the queue takes 2 more; the rest are dropped
    for i in range(2, 21):
        rec.publish(frame(i, 1_000_000_000 + i * 10_000_000))
    assert rec.state()["dropped"] == 17
    release.set()
    rec.stop_recording().join()
    assert rec.state()["frames"] == 3 and len(probe(tmp_path / rec.state()["files"][0])["times"]) == 3


def test_start_twice_stop_without_start_and_no_folder(tmp_path):
    with pytest.raises(RecordingError, match="--output-dir"):
        Recorder(None).start_recording()
    rec = Recorder(tmp_path)
    with pytest.raises(RecordingError, match="not recording"):
        rec.stop_recording()
    rec.start_recording()
    with pytest.raises(RecordingError, match="already recording"):
        rec.start_recording()
    rec.stop_recording().join()
    assert rec.state()["files"] == []  # no frame came: no file is made
    with pytest.raises(RecordingError, match="does not exist"):
        Recorder(tmp_path / "gone").start_recording()


async def test_rest_start_stop_and_refusals(config, daemon_factory, tmp_path):
    async with daemon_factory(config, renderer_factory=null_factory) as d:  # no --output-dir
        async with aiohttp.ClientSession(f"http://127.0.0.1:{d.http_port}") as s:
            status, body = await post(s, {"action": "start"})
            assert status == 409 and "--output-dir" in body["error"]["message"] and body["error"]["field"] == "action"
            async with s.get("/v1/record") as r:
                assert (await r.json())["available"] is False
    out = tmp_path / "out"
    async with daemon_factory(config, renderer_factory=noise_factory, output_dir=out) as d:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{d.http_port}") as s:
            assert (await post(s, {"action": "stop"}))[0] == 409
            assert (await post(s, {"action": "pause"}))[0] == 400
            assert (await post(s, ["start"]))[0] == 400
            status, body = await post(s, {"action": "start"})
            assert status == 200 and body["recording"] is True and body["encoder"] in record.ENCODERS
            status, body = await post(s, {"action": "start"})
            assert status == 409 and "already recording" in body["error"]["message"]
            await frames_flow(d, 5)
            await settle(lambda: d.health()["record"]["frames"] >= 5)
            status, body = await post(s, {"action": "stop"})
            assert status == 200 and body["recording"] is False and len(body["files"]) == 1
            assert (await post(s, {"action": "stop"}))[0] == 409
    info = probe(out / body["files"][0])
    assert len(info["times"]) == body["frames"] + body["repeats"] and body["frames"] >= 5
    assert (info["width"], info["height"]) == (64, 64)
    assert not list(out.glob("*.partial"))


async def test_osc_record_on_and_off(config, daemon_factory, tmp_path):
    async with daemon_factory(config, renderer_factory=noise_factory, output_dir=tmp_path) as d:
        client = SimpleUDPClient("127.0.0.1", d.osc_port)
        client.send_message("/bridge/record", 1)
        await settle(lambda: d.health()["record"]["recording"])
        await frames_flow(d, 3)
        await settle(lambda: d.health()["record"]["frames"] >= 3)
        client.send_message("/bridge/record", 0)
        await settle(lambda: len(d.health()["record"]["files"]) == 1)
        client.send_message("/bridge/record", 0)  # stop without start: an OSC rejection, counted
        client.send_message("/bridge/record", "yes")
        await settle(lambda: d.osc.stats.rejected == 2)
    assert len(probe(tmp_path / d.health()["record"]["files"][0])["times"]) >= 3


def test_sigterm_finishes_the_file(tmp_path, cache_dir):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--model", "null", "--http-port", "0",
                             "--osc-port", "0", "--shm-name", "", "--output-dir", str(out), "--width", "64",
                             "--height", "64", "--cache-dir", str(cache_dir)],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for line in proc.stderr:
            if "ready: http://" in line:
                port = int(line.split("ready: http://")[1].split("/")[0].rsplit(":", 1)[1])
                break
        import urllib.request

        def call(method, path, body=None):
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                data = r.read()
                return json.loads(data) if r.headers["Content-Type"].startswith("application/json") else data

        call("POST", "/v1/record", {"action": "start"})
        seed = 0
        while call("GET", "/v1/record")["frames"] < 3:
            seed += 1
            call("PATCH", "/v1/params", {"seed": seed})
            call("GET", f"/v1/frame.rgba?after={seed}&timeout=10")  # frame seed+1: the initial one, one a change
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    files = sorted(out.glob("record-*"))
    assert len(files) == 1 and files[0].suffix == ".mp4", files
    info = probe(files[0])
    assert len(info["times"]) >= 3 and (info["width"], info["height"]) == (64, 64)
