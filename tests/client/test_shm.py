"""Shared memory across real processes: tear-free reads, the segment outlives its readers."""

import os
import subprocess
import sys
import textwrap
import time
import zlib
from multiprocessing import shared_memory

import numpy as np
import pytest

from bridge.client import ShmReader, layout
from bridge.core.errors import BridgeError, ConfigError
from bridge.core.frame import Frame
from bridge.core.params import Params
from bridge.outputs import owner
from bridge.outputs.shm import ShmWriter
from conftest import unique_shm_name

rng = np.random.default_rng(0)


def checked_frame(seq: int, width: int, height: int) -> Frame:
    """Random pixels whose last 4 bytes hold the CRC-32 of all the others."""
    pixels = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    flat = pixels.reshape(-1)
    flat[-4:] = np.frombuffer(zlib.crc32(flat[:-4].tobytes()).to_bytes(4, "little"), np.uint8)
    return Frame(seq, seq, Params(seed=seq, width=width, height=height), pixels, 1.5, time.time_ns())


READER = textwrap.dedent("""
    import sys, time, zlib
    from bridge.client import ShmReader
    name, wanted = sys.argv[1], int(sys.argv[2])
    reader = ShmReader(name)
    good = torn = 0
    last = 0
    deadline = time.monotonic() + 60
    while good < wanted and time.monotonic() < deadline:
        frame = reader.read()
        if frame is None:
            continue
        flat = frame.pixels.reshape(-1)
        if zlib.crc32(flat[:-4].tobytes()) == int.from_bytes(flat[-4:].tobytes(), "little"):
            good += 1
        else:
            torn += 1
        assert frame.seq > last and frame.seed == frame.version
        last = frame.seq
    reader.close()
    print(good, torn, reader.retries)
""")


def test_reader_process_never_sees_a_torn_frame():
    name = unique_shm_name()
    with ShmWriter(name, 256, 256) as writer:
        frames = [checked_frame(i, 256, 256) for i in range(1, 9)]
        writer.publish(frames[0])
        proc = subprocess.Popen([sys.executable, "-c", READER, name, "300"], stdout=subprocess.PIPE, text=True)
        seq = 1
        while proc.poll() is None:  # publish as fast as we can while the reader reads
            seq += 1
            f = frames[seq % len(frames)]
            writer.publish(Frame(seq, seq, f.params.merged({"seed": seq}), f.pixels, 1.0, time.time_ns()))
        good, torn, retries = map(int, proc.stdout.read().split())
    assert proc.returncode == 0
    assert good == 300 and torn == 0
    print(f"reader retried {retries} racing reads")


def test_segment_survives_a_reader_process_exit():
    name = unique_shm_name()
    with ShmWriter(name, 64, 64) as writer:
        writer.publish(checked_frame(1, 64, 64))
        code = f"from bridge.client import ShmReader; r = ShmReader({name!r}); assert r.read().width == 64"
        subprocess.run([sys.executable, "-c", code], check=True)  # exits without closing
        subprocess.run([sys.executable, "-c", code + "; r.close()"], check=True)
        with ShmReader(name) as reader:  # still there, still the same frame
            assert reader.read().seq == 1


def test_layout_v1_header_bytes():
    name = unique_shm_name()
    with ShmWriter(name, 128, 96, slot_count=3) as writer:
        frame = checked_frame(1, 64, 32)
        writer.publish(frame)
        shm = layout.attach_untracked(name)
        buf = bytes(shm.buf[:128])
        assert buf[:4] == b"TBF1"
        assert int.from_bytes(buf[4:6], "little") == 128 and int.from_bytes(buf[6:8], "little") == 3
        assert int.from_bytes(buf[8:12], "little") == 128 and int.from_bytes(buf[12:16], "little") == 96
        assert int.from_bytes(buf[16:24], "little") == 2  # one frame published, stable
        slot = int.from_bytes(buf[24:28], "little")
        assert [int.from_bytes(buf[o:o + 4], "little") for o in (28, 32, 36)] == [64, 32, 256]
        assert buf[40:44] == bytes([4, 0, 0, 0]) and buf[76:80] == bytes(4) and buf[96:] == bytes(32)
        # The owner record (reserved bytes in v1): this process's pid, then its start time.
        assert int.from_bytes(buf[80:84], "little") == os.getpid() and buf[84:88] == bytes(4)
        assert int.from_bytes(buf[88:96], "little") == owner.process_start(os.getpid()) > 0
        assert int.from_bytes(buf[48:56], "little") == 1 and int.from_bytes(buf[56:64], "little") == 1
        start = 128 + slot * 128 * 96 * 4
        pixels = np.frombuffer(shm.buf, np.uint8, count=64 * 32 * 4, offset=start).reshape(32, 64, 4).copy()
        assert np.array_equal(pixels, frame.pixels)
        shm.close()
        assert shm.size >= 128 + 3 * 128 * 96 * 4


def test_flip_and_bgra():
    name = unique_shm_name()
    with ShmWriter(name, 64, 64) as writer:
        frame = checked_frame(1, 16, 8)
        writer.publish(frame)
        with ShmReader(name, flip=True, bgra=True) as reader:
            got = reader.read().pixels
            assert reader.read() is None  # nothing new since
            assert np.array_equal(reader.read(force=True).pixels, got)
    assert np.array_equal(got, frame.pixels[::-1][..., [2, 1, 0, 3]])


def test_close_unlinks_and_stale_segment_is_reclaimed():
    name = unique_shm_name()
    # A process that creates the segment and dies without cleanup, as a killed daemon would.
    code = ("import os, sys; from bridge.outputs.shm import ShmWriter; "
            "ShmWriter(sys.argv[1], 64, 64).open(); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, name], check=True, timeout=60)
    with ShmWriter(name, 64, 64) as writer:
        writer.publish(checked_frame(1, 8, 8))
    with pytest.raises(FileNotFoundError):
        shared_memory.SharedMemory(name)


def test_a_reused_pid_does_not_keep_a_segment_alive():
    name = unique_shm_name()
    stale = ShmWriter(name, 64, 64)
    stale.open()
    # Our own pid, another start time: the process that wrote it is gone, its pid reused.
    layout.write_owner(stale._shm.buf, layout.Owner(os.getpid(), owner.process_start(os.getpid()) - 1))
    stale._shm.close()
    stale._shm = None
    with ShmWriter(name, 64, 64) as writer:
        assert layout.read_owner(writer._shm.buf) == owner.this_process()
    assert not os.path.exists(f"/dev/shm/{name}")


def test_a_live_owner_keeps_its_segment_and_close_leaves_a_replacement_alone():
    name = unique_shm_name()
    with ShmWriter(name, 64, 64) as first:
        first.publish(checked_frame(5, 8, 8))
        with pytest.raises(ConfigError, match=rf"^shared memory '{name}' belongs to a running turbo-bridge "
                                              rf"daemon \(pid {os.getpid()}\); stop it.*--shm-name$"):
            ShmWriter(name, 64, 64).open()
        with ShmReader(name) as reader:  # untouched
            assert reader.read().seed == 5
        # Someone removes our name and another segment takes it: our close must not unlink theirs.
        layout.Segment.unlink_name(name)
        other = layout.Segment(name, create=4096)
    try:
        assert os.path.exists(f"/dev/shm/{name}")
    finally:
        other.close()
        other.unlink()


@pytest.mark.parametrize("size", [0, 64])
def test_an_empty_or_short_planted_segment_is_refused_in_one_line(size):
    name = unique_shm_name()
    planted = layout.Segment(name, create=4096)
    planted.close()
    os.truncate(f"/dev/shm/{name}", size)
    try:
        with pytest.raises(ConfigError, match=f"^shared memory '{name}' exists and is not a turbo-bridge "
                                              "frame segment") as info:
            ShmWriter(name, 64, 64).open()
        assert "\n" not in str(info.value) and os.path.getsize(f"/dev/shm/{name}") == size  # left alone
    finally:
        layout.Segment.unlink_name(name)


def test_foreign_segment_of_same_name_is_refused():
    name = unique_shm_name()
    foreign = shared_memory.SharedMemory(name, create=True, size=4096)
    try:
        with pytest.raises(BridgeError, match="not a turbo-bridge"):
            ShmWriter(name, 64, 64).open()
        assert bytes(foreign.buf[:4]) == bytes(4)  # untouched
    finally:
        foreign.close()
        foreign.unlink()


def test_latest_meta_reads_the_header_without_pixels():
    name = unique_shm_name()
    with ShmWriter(name, 64, 64) as writer:
        with ShmReader(name) as reader:
            assert reader.latest_meta() is None  # nothing published yet
            frame = checked_frame(7, 16, 8)
            writer.publish(frame)
            meta = reader.latest_meta()
            assert (meta.seed, meta.version, meta.width, meta.height) == (7, 7, 16, 8)
            assert reader.read().seq == 1  # peeking did not consume the frame


def test_the_metadata_is_packed_before_seq_goes_odd(monkeypatch):
    name = unique_shm_name()
    seen = []
    with ShmWriter(name, 64, 64) as writer:
        pack = layout.pack_meta

        def watched(meta):  # the seq word at the moment the metadata is packed
            seen.append(layout.SEQ.unpack_from(writer._shm.buf, layout.SEQ_OFFSET)[0])
            return pack(meta)

        monkeypatch.setattr(layout, "pack_meta", watched)
        for seq in (1, 2, 3):
            writer.publish(checked_frame(seq, 8, 8))
        with ShmReader(name) as reader:
            assert reader.read().seed == 3
    assert seen == [0, 2, 4]  # even every time: the odd window holds only stores


def test_a_reader_backs_off_on_a_seq_stuck_odd_and_gives_up():
    name = unique_shm_name()
    with ShmWriter(name, 64, 64) as writer:
        writer.publish(checked_frame(1, 8, 8))
        layout.SEQ.pack_into(writer._shm.buf, layout.SEQ_OFFSET, 3)  # a writer that died mid-publish
        with ShmReader(name) as reader:
            with pytest.raises(TimeoutError, match="odd: a publish never finished"):
                reader.read(timeout=0.2)
            # Retries slept between tries (50 us doubling to 5 ms; a sleep never ends early): about
            # 50 in 0.2 s at most, where a spin makes millions.
            assert 3 < reader.retries < 80, reader.retries
            layout.SEQ.pack_into(writer._shm.buf, layout.SEQ_OFFSET, 2)
            assert reader.read().seed == 1  # the segment settles: reads work again
