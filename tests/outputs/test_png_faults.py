"""PNG output under real faults: a read-only, vanished or full folder, no file handles left.

Each runs a real daemon writing into a real folder (a tmpfs mounted for the test where this
user may mount one), breaks the folder, checks that the error is reported once (log, OSC
``/bridge/error``, ``/v1/health``), that frames keep rendering, that no temp file is left, and
that writing resumes once the folder takes files again.
"""

import asyncio
import contextlib
import errno
import logging
import os
import resource
import shutil
import socket
import subprocess

import aiohttp
import numpy as np
import pytest
from PIL import Image

from bridge.app import MAIN_OUTPUTS
from bridge.client import osc_message, parse_osc_message
from bridge.outputs.png import PngFiles
from conftest import null_factory
from renderers import noise_factory


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    """Retries come sooner in these tests; the doubling and the cap work as shipped."""
    monkeypatch.setattr(PngFiles, "RETRY_S", 0.05)
    monkeypatch.setattr(PngFiles, "MAX_RETRY_S", 0.5)


def mount_tmpfs(path, size_kb):
    """Mount a tmpfs of ``size_kb`` at ``path``; False where this user may not mount."""
    path.mkdir()
    if os.geteuid() != 0:
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                            capture_output=True)
    return result.returncode == 0


def remount(path, mode):
    for _ in range(200):  # EBUSY while the writer holds a file open for writing: try again
        if subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], capture_output=True).returncode == 0:
            return
    raise AssertionError(f"could not remount {path} {mode}")


@pytest.fixture
def tmpfs(tmp_path):
    mounted = []

    def make(size_kb=1024):
        path = tmp_path / f"mnt{len(mounted)}"
        if mount_tmpfs(path, size_kb):
            mounted.append(path)
            return path
        return None

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=True)


async def until(predicate, timeout=30.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def temp_files(folder):
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")] if folder.exists() else []


async def break_and_recover(daemon, folder, caplog, break_it, fix_it, expect, listable=True):
    """Break the folder, check the error on every interface and the renders, fix it, check the resume."""
    sched = daemon.scheduler
    writer = next(output for output in daemon.app[MAIN_OUTPUTS] if output.kind == "png_files")
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    try:
        listener.sendto(osc_message("/bridge/subscribe", listener.getsockname()[1]), ("127.0.0.1", daemon.osc_port))
        await until(lambda: daemon.osc.subscribers)
        await until(lambda: writer.written >= 1 and (folder / "latest.png").exists())
        session = aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}")
        async with session.get("/v1/health") as r:  # connected now: kept alive through the fault
            assert (await r.json())["status"] == "ok"
        break_it()
        seed = sched.params.seed
        for _ in range(4):  # frames keep rendering while every write fails
            seq = sched.latest.seq
            seed += 1
            sched.apply({"seed": seed})
            assert (await sched.next_frame(seq, 10)).params.seed == seed
        await until(lambda: writer.failed_writes >= 3)
        async with session.get("/v1/health") as r:
            health = await r.json()
        assert health["status"] == "degraded" and expect in health["png_files"]["error"], health
        listener.settimeout(10)
        errors = []
        while not errors:
            address, args = parse_osc_message(listener.recv(65536))
            if address == "/bridge/error":
                errors.append(args[0])
        assert expect in errors[0] and str(folder) in errors[0]
        logged = [r for r in caplog.records if r.levelno == logging.ERROR and "PNG output" in r.getMessage()]
        assert len(logged) == 1, [r.getMessage() for r in logged]  # once, however many writes failed
        if listable:  # (without file handles, the test cannot list the folder either)
            assert temp_files(folder) == []
        fix_it()
        seq = sched.latest.seq
        sched.apply({"seed": seed + 1})
        newest = await sched.next_frame(seq, 10)
        await until(lambda: writer.error is None and writer.written >= 2)
        with Image.open(folder / "latest.png") as image:
            assert np.array_equal(np.asarray(image), newest.pixels)  # the newest frame, not a stale one
        async with session.get("/v1/health") as r:
            health = await r.json()
        assert health["status"] == "ok" and expect in health["png_files"]["last_error"]
        assert temp_files(folder) == []
    finally:
        listener.close()
        with contextlib.suppress(NameError):
            await session.close()


async def test_a_read_only_folder_is_reported_and_writing_resumes(config, daemon_factory, tmpfs, tmp_path, caplog):
    mount = tmpfs()
    if mount is None and os.geteuid() == 0:
        pytest.skip("root ignores file modes, and this root may not mount a tmpfs to make read-only")
    folder = (mount or tmp_path) / "png"
    if mount is not None:
        break_it, fix_it = (lambda: remount(mount, "ro")), (lambda: remount(mount, "rw"))
    else:
        break_it, fix_it = (lambda: folder.chmod(0o555)), (lambda: folder.chmod(0o755))
    async with daemon_factory(config, renderer_factory=null_factory, output_dir=folder) as daemon:
        await break_and_recover(daemon, folder, caplog, break_it, fix_it,
                                "Read-only file system" if mount else "Permission denied")


async def test_a_full_disk_is_reported_and_writing_resumes(config, daemon_factory, tmpfs, caplog):
    mount = tmpfs(256)
    if mount is None:
        pytest.skip("filling a real filesystem needs a small tmpfs, and this user may not mount one")
    folder = mount / "png"
    filler = mount / "filler"

    def fill():
        with open(filler, "wb", buffering=0) as f:
            with contextlib.suppress(OSError):  # until the disk is full (ENOSPC)
                while True:
                    f.write(bytes(4096))

    async with daemon_factory(config, renderer_factory=noise_factory, output_dir=folder,
                              initial=config.initial.merged({"width": 128, "height": 128})) as daemon:
        await break_and_recover(daemon, folder, caplog, fill, filler.unlink, "No space left on device")


async def test_a_vanished_folder_is_made_again(config, daemon_factory, tmp_path, caplog):
    folder = tmp_path / "out" / "png"
    async with daemon_factory(config, renderer_factory=null_factory, output_dir=folder) as daemon:
        sched = daemon.scheduler
        await until(lambda: (folder / "latest.png").exists())
        shutil.rmtree(folder)
        seq = sched.latest.seq
        sched.apply({"seed": 99})
        await sched.next_frame(seq, 10)
        await until(lambda: (folder / "latest.png").exists() and daemon.health()["png_files"]["written"] >= 2)
        with Image.open(folder / "latest.png") as image:
            assert np.asarray(image)[0, 0, 0] == 99
        assert daemon.health()["png_files"]["error"] is None
        assert any("was removed; made it again" in r.getMessage() for r in caplog.records)


async def test_a_vanished_parent_is_reported_not_made_again(config, daemon_factory, tmp_path, caplog):
    parent = tmp_path / "mount-point"
    folder = parent / "png"
    async with daemon_factory(config, renderer_factory=null_factory, output_dir=folder) as daemon:
        # The parent going away is a drive unplugged: writing under its mount point would fill /.
        await break_and_recover(daemon, folder, caplog, lambda: shutil.rmtree(parent), parent.mkdir,
                                "No such file or directory")


async def test_running_out_of_file_handles_is_reported_and_writing_resumes(config, daemon_factory, tmp_path, caplog):
    folder = tmp_path / "png"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    async with daemon_factory(config, renderer_factory=null_factory, output_dir=folder) as daemon:
        def exhaust():
            # The lowest free descriptor number becomes the limit: every new open() fails with EMFILE.
            lowest_free = os.open(os.devnull, os.O_RDONLY)  # open() hands out the lowest free number
            os.close(lowest_free)
            resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
            with pytest.raises(OSError) as info:
                open(os.devnull).close()
            assert info.value.errno == errno.EMFILE

        try:
            await break_and_recover(daemon, folder, caplog, exhaust,
                                    lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
                                    "Too many open files", listable=False)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
