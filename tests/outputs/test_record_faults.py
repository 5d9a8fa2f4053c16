"""Recordings under faults (issue 24 item 9): SIGKILL, a full disk, a vanished folder, an interrupted
file found at start, the size toggled every frame. Real daemons, real files, read back by FFmpeg."""

import asyncio
import json
import resource
import shutil
import signal
import socket
import struct
import time
import urllib.request

import aiohttp
import pytest

from bridge.client import osc_message, parse_osc_message
from bridge.core.params import Params
from bridge.outputs.record import Recorder
from conftest import null_factory, unique_shm_name
from daemon_process import start_daemon, unlink_segment, wait_ready
from recordings import decoded, frames_flow, post, probe, remove_folder, settle
from renderers import noise_factory

pytestmark = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="needs ffprobe (Debian ffmpeg)")


def call(port, method, path, body=None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def wait_for(predicate, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"{what}: not in {timeout} s"
        time.sleep(0.02)
    return value


def red_levels(path):
    """The mean red level of every frame FFmpeg decodes from ``path`` (the null renderer paints seed & 255)."""
    return [int(round(frame[..., 0].mean())) for frame in decoded(path)]


def pictures(levels):
    """``levels`` without repeats: a still frame encoded again (to push it to disk) shows the same picture."""
    return [level for i, level in enumerate(levels) if i == 0 or abs(level - levels[i - 1]) > 3]


def test_sigkill_keeps_every_frame_and_the_next_start_finishes_the_file(tmp_path, cache_dir):
    out, shm = tmp_path / "out", unique_shm_name()
    seeds = [40, 80, 120, 160, 200]
    proc = start_daemon(cache_dir, shm, "--output-dir", str(out))
    try:
        port, _, _ = wait_ready(proc)
        call(port, "POST", "/v1/record", {"action": "start"})
        for i, seed in enumerate(seeds, 1):
            call(port, "PATCH", "/v1/params", {"seed": seed})
            wait_for(lambda: call(port, "GET", "/v1/record")["frames"] == i, f"frame {i} encoded")
        (partial,) = out.glob("*.mp4.partial")
        # The last frame reaches the disk when the next comes, or when it is repeated after a second of
        # stillness: wait for what is on disk, as a reader of the file sees it.
        wait_for(lambda: pictures(red_levels(partial)) == pytest.approx(seeds, abs=3), "every frame on disk")
        assert call(port, "GET", "/v1/record")["repeats"] >= 1
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    on_disk = red_levels(partial)  # as SIGKILL left it: it plays, every frame in it
    assert pictures(on_disk) == pytest.approx(seeds, abs=3), on_disk

    proc = start_daemon(cache_dir, shm, "--output-dir", str(out))  # reclaims the killed daemon's segment too
    try:
        port, _, _ = wait_ready(proc)
        state = wait_for(lambda: (s := call(port, "GET", "/v1/record")) and not s["recovering"] and s, "recovery")
        assert call(port, "GET", "/v1/health")["status"] == "ok"  # a finished file is no failure
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        proc.stderr.close()
        unlink_segment(shm)
    final = partial.with_name(partial.name.removesuffix(".partial"))
    assert state["recovered"] == [{"file": partial.name, "frames": len(on_disk), "recovered_as": final.name}]
    assert not list(out.glob("*.partial")) and red_levels(final) == on_disk


def boxes(path):
    """The top-level MP4 boxes of ``path``: [(kind, offset, length)]."""
    data, found, pos = path.read_bytes(), [], 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        found.append((kind, pos, length))
        pos += length
    return found


async def test_interrupted_files_found_at_start_are_finished_removed_or_reported(config, daemon_factory, tmp_path,
                                                                                   caplog):
    # A real recording of 3 frames, then cut as a crash would cut it: in the middle of its last fragment.
    source = tmp_path / "source"
    source.mkdir()
    rec = Recorder(source)
    rec.start(lambda message: None)
    rec.start_recording()
    from test_record import frame  # noqa: E402 (the frame maker of the recorder's own tests)

    for i in range(3):
        rec.publish(frame(i + 1, 1_000_000_000 + i * 40_000_000))
    rec.stop_recording().join()
    made = source / rec.state()["files"][0]
    layout = boxes(made)
    last_mdat = [b for b in layout if b[0] == b"mdat"][-1]
    header = made.read_bytes()[:layout[1][1] + layout[1][2]]  # ftyp + the empty moov: no frame yet
    out = tmp_path / "out"
    out.mkdir()
    (out / "record-20260101-000000.mp4.partial").write_bytes(made.read_bytes()[:last_mdat[1] + last_mdat[2] // 2])
    (out / "record-20260101-000001.mp4.partial").write_bytes(header)
    # An unfinished file of the unfragmented kind: its frames sit in an mdat whose moov was never written.
    (out / "record-20260101-000002.mp4.partial").write_bytes(header[:layout[1][1]] + struct.pack(">I4s", 16, b"mdat")
                                                             + bytes(8))
    async with daemon_factory(config, renderer_factory=null_factory, output_dir=out) as d:
        await settle(lambda: not d.health()["record"]["recovering"])
        recovered = d.health()["record"]["recovered"]
        assert d.health()["status"] == "ok"
    assert recovered[0] == {"file": "record-20260101-000000.mp4.partial", "frames": 2,
                            "recovered_as": "record-20260101-000000.mp4"}
    assert recovered[1] == {"file": "record-20260101-000001.mp4.partial", "frames": 0,
                            "problem": "held no frame; removed"}
    assert recovered[2]["file"] == "record-20260101-000002.mp4.partial" \
        and "not a fragmented MP4" in recovered[2]["problem"]
    assert len(probe(out / "record-20260101-000000.mp4")["times"]) == 2
    assert sorted(p.name for p in out.glob("record-*")) == ["record-20260101-000000.mp4",
                                                            "record-20260101-000002.mp4.partial"]
    logged = [r.getMessage() for r in caplog.records if "interrupted recording" in r.getMessage()]
    assert any("000000.mp4.partial finished as record-20260101-000000.mp4 (2 frames)" in m for m in logged), logged
    assert any("000002.mp4.partial left as it is" in m for m in logged), logged


class OscErrors:
    """A subscriber to channel main's OSC feedback that collects its ``/bridge/error`` messages."""

    def __init__(self, daemon):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.sendto(osc_message("/bridge/subscribe", self.sock.getsockname()[1]), ("127.0.0.1", daemon.osc_port))
        self.daemon = daemon

    async def next_error(self, about: str, timeout=10.0) -> str:
        """The next ``/bridge/error`` whose message has ``about`` in it."""
        loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        while True:
            address, args = parse_osc_message(await asyncio.wait_for(loop.sock_recv(self.sock, 65536), timeout))
            if address == "/bridge/error" and about in args[0]:
                return args[0]

    def close(self):
        self.sock.close()


async def test_a_full_disk_keeps_what_was_written_and_is_reported_at_once(config, daemon_factory, tmp_path):
    # A file size limit makes the kernel fail the encoder's writes (EFBIG; Python ignores SIGXFSZ)
    # as a full disk would (ENOSPC): the same failed write() for FFmpeg.
    out = tmp_path / "out"
    async with daemon_factory(config, renderer_factory=noise_factory, output_dir=out,
                              initial=Params(width=128, height=128)) as d:
        await frames_flow(d, 1)  # latest.png exists before the limit
        osc = OscErrors(d)
        await settle(lambda: d.osc.subscribers)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
        try:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{d.http_port}") as s:
                assert (await post(s, {"action": "start"}))[0] == 200
                while d.health()["record"]["recording"]:
                    await frames_flow(d, 1)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        try:
            told = await osc.next_error("recording stopped")
        finally:
            osc.close()
        health = d.health()
        state = health["record"]
        assert "File too large" in state["error"] and "keeps the first" in state["error"], state
        assert told == state["error"][:500] and health["status"] == "degraded" \
            and health["last_error"] == state["error"]
        kept = state["session_files"]
        assert len(kept) == 1 and kept == state["files"]
        before = d.scheduler.stats.frames
        await frames_flow(d, 3)  # the render loop never noticed
        assert d.scheduler.stats.frames >= before + 3 and d.scheduler.stats.render_errors == 0
        async with aiohttp.ClientSession(f"http://127.0.0.1:{d.http_port}") as s:
            status, body = await post(s, {"action": "stop"})
            assert status == 409 and "File too large" in body["error"]["message"]
            assert (await post(s, {"action": "start"}))[0] == 200  # a new recording clears the failure
            assert d.health()["status"] == "ok"
            assert (await post(s, {"action": "stop"}))[0] == 200
    frames = int(state["error"].split("keeps the first ")[1].split()[0])
    info = probe(out / kept[0])
    assert frames >= 1 and len(info["times"]) == frames and (info["width"], info["height"]) == (128, 128)
    assert not list(out.glob("*.partial"))


async def test_a_vanished_output_folder_is_reported_at_once(config, daemon_factory, tmp_path):
    out = tmp_path / "out"
    async with daemon_factory(config, renderer_factory=noise_factory, output_dir=out) as d:
        osc = OscErrors(d)
        await settle(lambda: d.osc.subscribers)
        try:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{d.http_port}") as s:
                assert (await post(s, {"action": "start"}))[0] == 200
                await frames_flow(d, 2)
                await settle(lambda: d.health()["record"]["frames"] >= 2)
                remove_folder(out)  # no stop: the recorder must notice by itself
                told = await osc.next_error("recording stopped")
                health = d.health()
                assert "removed while recording" in told and "went with it" in told, told
                assert health["status"] == "degraded" and health["record"]["error"][:500] == told
                assert health["record"]["recording"] is False and health["last_error"] == health["record"]["error"]
                await frames_flow(d, 2)  # frames keep flowing; the PNG writer makes the folder again
                await settle(lambda: out.is_dir())
                assert (await post(s, {"action": "start"}))[0] == 200  # and recording works again
                await frames_flow(d, 1)
                await settle(lambda: d.health()["record"]["frames"] >= 1)
                status, body = await post(s, {"action": "stop"})
                assert status == 200 and body["error"] is None and (out / body["files"][-1]).is_file()
                assert d.health()["status"] == "ok"
        finally:
            osc.close()


async def test_a_size_toggled_every_frame_makes_a_bounded_number_of_files(config, daemon_factory, tmp_path):
    out = tmp_path / "out"
    async with daemon_factory(config, renderer_factory=null_factory, output_dir=out) as d:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{d.http_port}") as s:
            assert (await post(s, {"action": "start"}))[0] == 200
            for i in range(40):  # each frame once the recorder took the one before (no frame dropped)
                seq = d.scheduler.latest.seq
                d.scheduler.apply({"width": 72 if i % 2 == 0 else 64, "seed": i + 1})
                await d.scheduler.next_frame(seq, 10)
                await settle(lambda: d.health()["record"]["frames"] == i + 1)
            status, body = await post(s, {"action": "stop"})
    assert status == 200 and body["error"] is None and body["dropped"] == 0, body
    files = sorted(p.name for p in out.glob("record-*"))
    assert len(body["session_files"]) == 16 and sorted(body["session_files"]) == files
    # Sizes 72, 64, 72...: 16 files for frames 1-16, then frames of width 72 (every other one) are scaled.
    assert body["scaled"] == (40 - 16) // 2
    assert sum(len(probe(out / name)["times"]) for name in files) == body["frames"] + body["repeats"]
    last = probe(out / body["session_files"][-1])
    assert (last["width"], last["height"]) == (64, 64) and len(last["times"]) >= 40 - 15  # frames 16-40
