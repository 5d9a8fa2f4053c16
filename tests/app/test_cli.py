"""The console entry point as a user runs it: a real process, real sockets, signals."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from multiprocessing import shared_memory
from pathlib import Path

import pytest

from bridge.cli import build_parser, config_from_args
from bridge.core.errors import ConfigError, ValidationError
from conftest import unique_shm_name


def test_article_flags_set_initial_params():
    args = build_parser().parse_args(["serve", "--model", "demo", "--guidance_scale", "0", "--num_inference_steps",
                                      "2", "--width", "640", "--height", "384", "--seed", "18446744073709551615"])
    config = config_from_args(args)
    assert (config.initial.steps, config.initial.width, config.initial.height, config.initial.seed) == \
        (2, 640, 384, 2**64 - 1)
    assert config.host == "127.0.0.1" and config.http_port == 8787 and config.osc_port == 9000


def test_bad_initial_value_is_refused():
    with pytest.raises(ValidationError, match="multiple of 8"):
        config_from_args(build_parser().parse_args(["serve", "--width", "500"]))


def start(cache_dir, *extra, env_extra=None):
    env = {**os.environ, "TURBO_BRIDGE_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "bridge", "serve", *extra], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=env)


def test_serve_demo_answers_then_stops_cleanly_on_sigterm(cache_dir):
    name = unique_shm_name()
    proc = start(cache_dir, "--model", "demo", "--http-port", "0", "--osc-port", "0", "--shm-name", name,
                 "--width", "64", "--height", "64")
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        match = re.search(r"ready: http://127\.0\.0\.1:(\d+)/v1/", line)
        if match or not line:
            break
    assert match, "".join(lines)
    base = f"http://127.0.0.1:{match.group(1)}"
    with urllib.request.urlopen(f"{base}/v1/frame.png?after=0&timeout=30") as r:
        assert r.status == 200 and r.read(8) == b"\x89PNG\r\n\x1a\n"
    with urllib.request.urlopen(f"{base}/v1/health") as r:
        assert json.load(r)["model"] == "demo"
    shared_memory.SharedMemory(name).close()  # exists while serving
    from multiprocessing import resource_tracker
    resource_tracker.unregister("/" + name, "shared_memory")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    # The daemon's own stop (clients told, sockets closed, segment unlinked: its last line) takes
    # milliseconds; timed to that line. What follows is the interpreter unloading torch, seconds
    # on a busy 2-core machine, not the daemon's to speed up: the wait for the exit only guards
    # against a hang (as the demo_daemon fixture's).
    timed = []  # (seconds after the signal, line)
    reader = threading.Thread(target=lambda: timed.extend((time.monotonic() - started, line) for line in proc.stderr))
    reader.start()
    proc.wait(timeout=60)
    reader.join(10)
    rest = "".join(line for _, line in timed)
    assert proc.returncode == 0 and "unlinked" in rest, rest
    stopped_in = next(t for t, line in timed if "unlinked" in line)
    assert stopped_in < 5, (stopped_in, rest)
    with pytest.raises(FileNotFoundError):
        shared_memory.SharedMemory(name)


def test_missing_model_is_one_clear_line(tmp_path):
    proc = start(tmp_path, "--model", "nobody/no-such-model", "--shm-name", "", "--http-port", "0",
                 "--osc-port", "0", env_extra={"HF_HUB_OFFLINE": "1"})
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 1
    errors = [line for line in err.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "--model demo" in errors[0] and "Traceback" not in err


def test_an_empty_home_counts_as_unset(monkeypatch):
    import pwd

    from bridge.config import default_cache_dir

    for var in ("TURBO_BRIDGE_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", "")
    home = pwd.getpwuid(os.getuid()).pw_dir
    assert default_cache_dir() == Path(home) / ".cache" / "turbo-bridge" != Path("/.cache/turbo-bridge")


def test_a_daemon_started_with_an_empty_home_says_where_its_cache_went():
    name = unique_shm_name()
    env = {k: v for k, v in os.environ.items() if k not in ("TURBO_BRIDGE_CACHE", "XDG_CACHE_HOME")}
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--model", "null", "--http-port", "0",
                             "--osc-port", "0", "--shm-name", name], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env={**env, "HOME": "", "PYTHONUNBUFFERED": "1"})
    lines = []
    try:
        while not any("ready:" in line for line in lines):
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        proc.send_signal(signal.SIGHUP)  # stops it as SIGTERM would
        rest = proc.communicate(timeout=20)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    import pwd

    home = pwd.getpwuid(os.getuid()).pw_dir
    text = "".join(lines)
    assert f"HOME is empty: treated as unset (home {home})" in text
    assert f"cache folder {Path(home) / '.cache' / 'turbo-bridge'} " in text and "folder /.cache" not in text
    assert proc.returncode == 0 and "SIGHUP received" in rest and "unlinked" in rest


def test_connection_caps_come_from_the_command_line():
    config = config_from_args(build_parser().parse_args(["serve", "--max-connections", "10",
                                                         "--max-connections-per-address", "3"]))
    assert (config.http.max_connections, config.http.max_per_address) == (10, 3)
    default = config_from_args(build_parser().parse_args(["serve"])).http
    assert (default.max_connections, default.max_per_address, default.head_timeout_s) == (256, 64, 10.0)


def test_the_compile_knobs_come_from_the_command_line():
    args = build_parser().parse_args(["serve", "--compile-scope", "blocks", "--compile-text", "off"])
    config = config_from_args(args)
    assert (config.compile_scope, config.compile_text) == ("blocks", False)
    default = config_from_args(build_parser().parse_args(["serve"]))
    assert (default.compile_scope, default.compile_text) == ("calls", True)


def test_the_batch_decoder_comes_from_the_command_line():
    config = config_from_args(build_parser().parse_args(["serve", "--vae", "full", "--batch-vae", "tiny"]))
    assert (config.vae, config.batch_vae) == ("full", "tiny")
    assert config_from_args(build_parser().parse_args(["serve"])).batch_vae == "same"  # today's batches
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--batch-vae", "full"])  # same or tiny: --vae names the decoder


def test_warm_channels_come_from_the_command_line_within_a_batch():
    parse = build_parser().parse_args
    assert config_from_args(parse(["serve"])).warm_channels == 1  # none: today's start
    assert config_from_args(parse(["serve", "--warm-channels", "4"])).warm_channels == 4
    assert config_from_args(parse(["serve", "--max-channels", "16", "--warm-channels", "8"])).warm_channels == 8
    for argv, why in ((["--warm-channels", "0"], r"to 4 \(--max-channels 4\), got 0"),
                      (["--warm-channels", "5"], r"to 4 \(--max-channels 4\), got 5"),
                      (["--max-channels", "16", "--warm-channels", "9"], r"to 8 \(a batch holds 8 frames\), got 9")):
        with pytest.raises(ConfigError, match=r"--warm-channels takes 1 \(no batch warmed\) " + why):
            config_from_args(parse(["serve", *argv]))


def test_the_batch_window_comes_from_the_command_line():
    config = config_from_args(build_parser().parse_args(["serve", "--batch-window-ms", "4"]))
    assert config.batch_window_ms == 4.0
    assert config_from_args(build_parser().parse_args(["serve"])).batch_window_ms == 0.0  # off: today's rounds
    for bad in ("-1", "1001"):
        with pytest.raises(ConfigError, match=r"--batch-window-ms takes 0\.\.1000 ms"):
            config_from_args(build_parser().parse_args(["serve", "--batch-window-ms", bad]))


def test_render_lanes_come_from_the_command_line_and_need_the_overlap():
    parse = build_parser().parse_args
    assert config_from_args(parse(["serve", "--overlap", "on", "--render-lanes", "2"])).render_lanes == 2
    assert config_from_args(parse(["serve", "--overlap", "on"])).render_lanes == 1  # one stream: today's frames
    with pytest.raises(ConfigError, match=r"--render-lanes 2 runs frames side by side .*: add --overlap on"):
        config_from_args(parse(["serve", "--render-lanes", "2"]))
    for bad in ("0", "5"):
        with pytest.raises(ConfigError, match=rf"--render-lanes takes 1\.\.4, got {bad}"):
            config_from_args(parse(["serve", "--overlap", "on", "--render-lanes", bad]))
