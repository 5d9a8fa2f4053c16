"""Shared-memory ownership between real daemon processes: one live owner per --shm-name."""

import os
import signal
import socket
import time

import pytest

from bridge.client import ShmReader, layout, osc_message
from conftest import unique_shm_name
from daemon_process import refused_in_one_line, segment_exists, start_daemon, unlink_segment, wait_ready


def frame_with_seed(name, osc_port, seed):
    """Send a seed over OSC and wait for that frame in the segment ``name``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(osc_message("/bridge/seed", seed), ("127.0.0.1", osc_port))
    with ShmReader(name) as reader:
        deadline = time.monotonic() + 10
        while (frame := reader.read(force=True)) is None or frame.seed != seed:
            assert time.monotonic() < deadline, f"no frame with seed {seed} in {name!r}"
            time.sleep(0.01)
        return frame


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return err




def test_a_second_daemon_with_the_same_name_is_refused_and_the_first_keeps_serving(tmp_path):
    name = unique_shm_name()
    first = start_daemon(tmp_path, name)
    try:
        _, osc_port, _ = wait_ready(first)
        second = start_daemon(tmp_path, name)
        line = refused_in_one_line(second)
        assert f"shared memory '{name}' belongs to a running turbo-bridge daemon (pid {first.pid})" in line
        assert "--shm-name" in line
        # The first daemon's segment is untouched and it keeps publishing into it.
        shm = layout.attach_untracked(name)
        try:
            assert layout.read_owner(shm.buf).pid == first.pid
        finally:
            shm.close()
        assert frame_with_seed(name, osc_port, 41).seed == 41
        assert "unlinked" in stop(first) and not segment_exists(name)
    finally:
        if first.poll() is None:
            first.kill()
        unlink_segment(name)


def test_stopping_a_daemon_leaves_a_newer_daemons_segment_alone(tmp_path):
    name = unique_shm_name()
    first = start_daemon(tmp_path, name)
    second = None
    try:
        wait_ready(first)
        layout.Segment.unlink_name(name)  # an operator removes the name (rm /dev/shm/...)
        second = start_daemon(tmp_path, name)
        _, osc_port, _ = wait_ready(second)
        err = stop(first)
        assert "no longer ours" in err and "Traceback" not in err
        assert segment_exists(name)
        assert frame_with_seed(name, osc_port, 42).seed == 42  # the second still serves through it
        assert "unlinked" in stop(second) and not segment_exists(name)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
        unlink_segment(name)


@pytest.mark.parametrize("size", [0, 4096])
def test_an_empty_or_foreign_planted_segment_is_refused_in_one_line(tmp_path, size):
    name = unique_shm_name()
    fd = os.open(f"/dev/shm/{name}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.ftruncate(fd, size)
    os.close(fd)
    try:
        line = refused_in_one_line(start_daemon(tmp_path, name))
        assert f"shared memory '{name}' exists and is not a turbo-bridge frame segment" in line
        assert os.path.getsize(f"/dev/shm/{name}") == size  # left alone
    finally:
        layout.Segment.unlink_name(name)
