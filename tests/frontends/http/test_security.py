"""Access control over real sockets: loopback default, token, Host check, CORS, OSC allow-list, limits."""

import asyncio
import logging
import os
import socket
import subprocess
import sys

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from yarl import URL

from bridge.client import osc_message
from bridge.core.errors import ConfigError
from bridge.frontends.security import (
    Access,
    OncePerSender,
    check_exposure,
    host_of,
    is_loopback,
    middleware,
    token_matches,
)
from conftest import null_factory

TOKEN = "correct-horse-battery-staple"


def lan_address() -> str | None:
    """This machine's non-loopback IPv4 address, if it has one (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("8.8.8.8", 9))
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if is_loopback(address) else address


# -- the policy itself --------------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_loopback_needs_nothing(host):
    check_exposure(host, Access())


@pytest.mark.parametrize("access,missing,present", [
    (Access(), ["--token", "--osc-allow"], []),
    (Access.from_options(token=TOKEN), ["--osc-allow"], ["--token SECRET"]),
    (Access.from_options(osc_allow=["10.0.0.0/8"]), ["--token"], ["--osc-allow ADDRESS"]),
])
def test_network_bind_refused_without_token_and_osc_allow(access, missing, present):
    with pytest.raises(ConfigError) as caught:
        check_exposure("0.0.0.0", access)
    message = str(caught.value)
    assert "--host 0.0.0.0 is not a loopback address" in message
    assert all(m in message for m in missing) and not any(p in message for p in present)
    check_exposure("0.0.0.0", Access.from_options(token=TOKEN, osc_allow=["10.0.0.0/8"]))


@pytest.mark.parametrize("kwargs,needle", [
    ({"token": "short"}, "at least 16 printable ASCII"),
    ({"token": "with a space in the middle"}, "without spaces"),
    ({"osc_allow": ["10.0.0.0/33"]}, "--osc-allow takes IP addresses"),
    ({"osc_allow": ["stage-pc"]}, "--osc-allow takes IP addresses"),
    ({"cors_origins": ["*"]}, "'*' is refused"),
    ({"cors_origins": ["https://show.example/page"]}, "--cors-origin takes an origin"),
    ({"allow_hosts": ["show.local:8787"]}, "without scheme or port"),
])
def test_bad_options_are_refused_with_what_to_change(kwargs, needle):
    with pytest.raises(ConfigError, match=None) as caught:
        Access.from_options(**kwargs)
    assert needle in str(caught.value)


def test_options_are_normalised():
    access = Access.from_options(TOKEN, ["Show.Local,[fd00::7]"], ["HTTPS://Show.Example:8443"],
                                 ["192.168.1.0/24, 10.1.2.3"])
    assert access.allow_hosts == ("show.local", "fd00::7")
    assert access.cors_origins == ("https://show.example:8443",) and access.trusts_origin("https://SHOW.example:8443")
    assert [str(n) for n in access.osc_allow] == ["192.168.1.0/24", "10.1.2.3/32"]
    assert TOKEN not in repr(access)


def test_host_header_parsing_and_token_compare():
    assert [host_of(h) for h in ("Localhost:8787", "[::1]:8787", "[::1]", "example.org", "::1")] == \
        ["localhost", "::1", "::1", "example.org", "::1"]
    assert token_matches(TOKEN, TOKEN) and not token_matches(TOKEN[:-1], TOKEN) and not token_matches(None, TOKEN)
    assert not token_matches("\udcff" * 20, TOKEN)  # an undecodable header byte is a mismatch, not a crash


async def test_wildcard_bind_accepts_ip_literals_but_not_other_names():
    guard = middleware("0.0.0.0", Access.from_options(TOKEN, osc_allow=["10.0.0.0/8"]))

    async def ok(request):
        return aiohttp.web.Response(text="ok")

    async def status(host):
        request = make_mocked_request("GET", "/v1/health", headers={"Host": host, "Authorization": f"Bearer {TOKEN}"})
        return (await guard(request, ok)).status

    assert await status("192.168.1.20:8787") == 200 and await status("[fd00::2]:8787") == 200
    assert await status("localhost:8787") == 200
    assert await status("attacker.example:8787") == 403  # a DNS-rebinding page sends its own name


def test_cli_refuses_a_network_bind_in_one_line(tmp_path):
    env = {**os.environ, "TURBO_BRIDGE_CACHE": str(tmp_path)}
    env.pop("TURBO_BRIDGE_TOKEN", None)
    done = subprocess.run([sys.executable, "-m", "bridge", "serve", "--model", "null", "--host", "0.0.0.0",
                           "--http-port", "0", "--osc-port", "0", "--shm-name", ""],
                          capture_output=True, text=True, timeout=60, env=env)
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "--token" in errors[0] and "--osc-allow" in errors[0] and "ready" not in done.stderr


# -- HTTP and WebSocket against a running daemon ------------------------------------------

@pytest.fixture
async def guarded(config, daemon_factory):
    access = Access.from_options(TOKEN, ["show.local"], ["https://show.example"], ["10.0.0.0/24"])
    async with daemon_factory(config, renderer_factory=null_factory, access=access) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            yield session, daemon


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_token_is_required_and_checked(guarded):
    session, daemon = guarded
    for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"}, {"Authorization": f"Basic {TOKEN}"}):
        async with session.get("/v1/params", headers=headers) as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await r.json())["error"]["field"] == "Authorization"
    async with session.patch("/v1/params", json={"seed": 5}) as r:
        assert r.status == 401
    assert daemon.scheduler.params.seed == 0  # refused before anything changed
    async with session.patch("/v1/params", json={"seed": 5}, headers={"Authorization": f"bearer {TOKEN}"}) as r:
        assert r.status == 200
    async with session.get(f"/v1/frame.png?access_token={TOKEN}") as r:
        assert r.status == 401  # the query form is for the WebSocket and MJPEG only
    for path in ("/", "/static/page.js"):  # the page holds no data; it reads the token from its URL fragment
        async with session.get(path) as r:
            assert r.status == 200


async def test_websocket_and_mjpeg_take_the_token_in_the_query(guarded):
    session, daemon = guarded
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await session.ws_connect("/v1/ws")
    assert caught.value.status == 401
    for kwargs in ({"headers": AUTH}, {"params": {"access_token": TOKEN}}):
        async with session.ws_connect("/v1/ws", **kwargs) as ws:
            msg = await asyncio.wait_for(ws.receive_json(), 5)
            assert msg["type"] == "hello"
    async with session.get("/v1/stream.mjpeg") as r:
        assert r.status == 401
    async with session.get(f"/v1/stream.mjpeg?access_token={TOKEN}") as r:
        assert r.status == 200 and (await r.content.readuntil(b"\r\n")).startswith(b"--turbo-bridge-frame")


async def test_host_header_guards_against_dns_rebinding(guarded):
    session, daemon = guarded
    port = daemon.http_port
    for host, status in ((f"attacker.example:{port}", 403), ("attacker.example", 403), (f"127.0.0.1:{port}", 200),
                         (f"localhost:{port}", 200), (f"[::1]:{port}", 200), (f"SHOW.local:{port}", 200)):
        async with session.get("/v1/health", headers={**AUTH, "Host": host}) as r:
            assert r.status == status, host
            if status == 403:
                assert "DNS rebinding" in (await r.json())["error"]["message"]
    async with session.get("/", headers={"Host": "attacker.example"}) as r:
        assert r.status == 403  # the page too: a rebinding page must not even read it


async def test_cors_headers_only_for_the_configured_origin(guarded, config, daemon_factory):
    session, daemon = guarded
    async with session.get("/v1/params", headers={**AUTH, "Origin": "https://show.example"}) as r:
        assert r.headers["Access-Control-Allow-Origin"] == "https://show.example" and "Origin" in r.headers["Vary"]
        assert "X-Frame-Seq" in r.headers["Access-Control-Expose-Headers"]
    async with session.options("/v1/params", headers={"Origin": "https://show.example",
                                                      "Access-Control-Request-Method": "PATCH",
                                                      "Access-Control-Request-Headers": "authorization"}) as r:
        assert r.status == 204 and "PATCH" in r.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
        assert r.headers["Access-Control-Allow-Origin"] == "https://show.example"
    async with session.get("/v1/params", headers={**AUTH, "Origin": "https://evil.example"}) as r:
        assert r.status == 200 and not any(h.startswith("Access-Control") for h in r.headers)
    async with session.ws_connect("/v1/ws", headers=AUTH, origin="https://show.example") as ws:
        assert (await asyncio.wait_for(ws.receive_json(), 5))["type"] == "hello"
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await session.ws_connect("/v1/ws", headers=AUTH, origin="https://evil.example")
    # The default daemon sends no CORS header at all, whatever the Origin.
    async with daemon_factory(config, renderer_factory=null_factory, shm_name=None) as plain:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{plain.http_port}") as s:
            async with s.options("/v1/params", headers={"Origin": "https://show.example",
                                                        "Access-Control-Request-Method": "PATCH"}) as r:
                assert r.status == 405 and "PATCH" in r.headers["Allow"]
                assert not any(h.startswith("Access-Control") for h in r.headers)
            async with s.get("/v1/params", headers={"Origin": "https://show.example"}) as r:
                assert r.status == 200 and not any(h.startswith("Access-Control") for h in r.headers)


def test_osc_allow_list_admits_loopback_and_listed_networks(config):
    """The filter as asyncio calls it (datagram_received with the sender's address)."""
    from concurrent.futures import ThreadPoolExecutor

    from bridge.core.renderer import NullRenderer
    from bridge.engine.changes import ChangeDoor
    from bridge.engine.scheduler import Scheduler
    from bridge.frontends.osc.server import OscServer
    from bridge.frontends.security import SenderFilter

    sched = Scheduler(NullRenderer(), ThreadPoolExecutor(1))
    server = OscServer(ChangeDoor(sched),
                       SenderFilter(Access.from_options(osc_allow=["10.0.0.0/24", "fd00::/64"]).osc_allow))
    for i, sender in enumerate(["127.0.0.1", "10.0.0.7", "::ffff:10.0.0.8", "fd00::9", "::1"], start=1):
        server.datagram_received(osc_message("/bridge/seed", i), (sender, 5000))
        assert sched.params.seed == i, sender
    for sender in ["10.0.1.7", "192.168.1.2", "fd01::1", "::ffff:8.8.8.8"]:
        server.datagram_received(osc_message("/bridge/seed", 99), (sender, 5000))
        server.datagram_received(osc_message("/bridge/subscribe", 5001), (sender, 5000))
    assert sched.params.seed == 5 and server.stats.refused == 8 and not server.subscribers


@pytest.mark.skipif(lan_address() is None, reason="no non-loopback IPv4 address on this machine")
async def test_real_network_bind_needs_the_token_and_drops_unlisted_osc(config, daemon_factory):
    """Bound to this machine's LAN address: the token is checked and OSC from an unlisted address is dropped."""
    address = lan_address()
    access = Access.from_options(TOKEN, osc_allow=["192.0.2.250/32"])  # not this machine's address
    async with daemon_factory(config, renderer_factory=null_factory, host=address, access=access) as daemon:
        async with aiohttp.ClientSession(f"http://{address}:{daemon.http_port}") as session:
            async with session.get("/v1/params") as r:
                assert r.status == 401
            async with session.get("/v1/params", headers=AUTH) as r:
                assert r.status == 200
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(osc_message("/bridge/seed", 42), (address, daemon.osc_port))  # source: the LAN address
        for _ in range(200):
            if daemon.osc.stats.refused:
                break
            await asyncio.sleep(0.01)
        assert daemon.osc.stats.refused == 1 and daemon.scheduler.params.seed == 0
        with pytest.raises(OSError):  # nothing listens on loopback
            socket.create_connection(("127.0.0.1", daemon.http_port), timeout=1).close()


# -- limits --------------------------------------------------------------------------------

@pytest.fixture
async def plain(config, daemon_factory):
    async with daemon_factory(config, renderer_factory=null_factory) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            yield session, daemon


async def test_body_limits_with_and_without_content_length(plain):
    session, daemon = plain

    async def chunks():
        for _ in range(100):
            yield b" " * 1024

    async with session.patch("/v1/params", data=b" " * (64 * 1024 + 1)) as r:
        assert r.status == 413 and "at most 65536 bytes" in (await r.json())["error"]["message"]
    async with session.patch("/v1/params", data=chunks()) as r:  # chunked: no Content-Length to check first
        assert r.status == 413 and "error" in await r.json()
    async with session.patch("/v1/params", data=b" " * 1000 + b'{"seed": 3}') as r:
        assert r.status == 200  # under the limit, whitespace and all
    assert daemon.scheduler.params.seed == 3


async def test_oversized_request_lines_and_headers_are_refused(plain):
    _, daemon = plain

    async def raw(request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.http_port)
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(200), 5)
        writer.close()
        return answer

    long_url = b"GET /v1/frame.png?after=" + b"1" * 20000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    assert (await raw(long_url)).split(b" ")[1] in (b"400", b"414")
    big_header = b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    assert (await raw(big_header)).split(b" ")[1] in (b"400", b"431")
    assert (await raw(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("path", ["/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py",
                                  "/static/%2e%2e%2f%2e%2e%2fpyproject.toml", "/static//etc/passwd"])
async def test_static_files_never_leave_their_folder(plain, path):
    session, _ = plain
    async with session.get(URL(f"{session._base_url}{path}", encoded=True)) as r:
        assert r.status in (403, 404) and b"import" not in await r.read()


async def test_output_files_never_leave_the_output_dir(config, daemon_factory, tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside.txt"
    out.mkdir()
    outside.write_bytes(b"precious")
    # Links planted where the writer puts its temporary file and its output: it must not follow them.
    (out / f".latest.png.{os.getpid()}.tmp").symlink_to(outside)
    (out / "latest.png").symlink_to(outside)
    async with daemon_factory(config, renderer_factory=null_factory, output_dir=out, keep_frames=True) as daemon:
        for seed in (1, 2, 3):
            seq = daemon.scheduler.latest.seq if daemon.scheduler.latest else 0
            daemon.scheduler.apply({"seed": seed})
            await daemon.scheduler.next_frame(seq, 5)
        for _ in range(300):
            if (out / "latest.png").exists() and not (out / "latest.png").is_symlink():
                break
            await asyncio.sleep(0.01)
    assert outside.read_bytes() == b"precious"
    assert not (out / "latest.png").is_symlink() and (out / "latest.png").read_bytes()[:4] == b"\x89PNG"
    assert all(p.parent == out and not p.is_symlink() for p in out.iterdir())


@pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="Debian's chromium is not installed")
async def test_the_live_page_takes_the_token_from_its_url_fragment(guarded):
    """Real Chromium: with #token= the page connects and shows frames; without it the daemon refuses it."""
    async_api = pytest.importorskip("playwright.async_api")
    _, daemon = guarded
    base = f"http://127.0.0.1:{daemon.http_port}/"
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                                   args=["--no-sandbox", "--headless", "--disable-gpu"])
        try:
            page = await browser.new_page()
            await page.goto(base + f"#token={TOKEN}")
            await page.wait_for_function("() => Number(document.getElementById('frame').dataset.seq) >= 1",
                                         timeout=15000)
            assert await page.locator("#link").text_content() == "live"
            assert await page.evaluate("() => document.getElementById('width').max") == "256"  # /v1/schema read
            stranger = await browser.new_page()
            await stranger.goto(base)
            await asyncio.sleep(1.0)
            assert await stranger.locator("#link").text_content() != "live"
            assert await stranger.evaluate("() => Number(document.getElementById('frame').dataset.seq || 0)") == 0
        finally:
            await browser.close()


async def send_malformed(port: int, requests: list[bytes], caplog, **filter_options) -> list[logging.LogRecord]:
    """Send raw requests aiohttp answers 400, through the filter `turbo-bridge serve` installs; its log records."""
    from bridge.cli import _MalformedRequestsInOneLine

    server_log = logging.getLogger("aiohttp.server")
    one_line = _MalformedRequestsInOneLine(**filter_options)
    server_log.addFilter(one_line)
    try:
        with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
            for request in requests:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                assert (await asyncio.wait_for(reader.read(100), 5)).startswith(b"HTTP/1.0 400")
                writer.close()
    finally:
        server_log.removeFilter(one_line)
    return [r for r in caplog.records if r.name == "aiohttp.server"]


async def test_malformed_http_is_one_warning_line_not_a_traceback(plain, caplog):
    """What `turbo-bridge serve` installs: anyone on the network can send garbage, the log stays readable."""
    _, daemon = plain
    records = await send_malformed(daemon.http_port, [b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                                      b"X-Probe: \x00\r\n\r\n"], caplog)
    assert len(records) == 1 and records[0].levelname == "WARNING" and records[0].exc_info is None
    assert "malformed HTTP, answered 400 (Invalid header value char" in records[0].getMessage()
    assert "\n" not in records[0].getMessage()


async def test_a_token_in_a_malformed_request_never_reaches_the_log(guarded, caplog):
    """aiohttp quotes the offending request line or header: with a token in it, the log must not."""
    _, daemon = guarded
    requests = [
        f"GET /v1/params HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\x00\r\n\r\n",
        f"GET /v1/ws?access_token={TOKEN} HTTP/1.1 junk\r\nHost: 127.0.0.1\r\n\r\n",
        f"G\x01T /v1/ws?format=png&access_token={TOKEN} HTTP/1.1\r\n\r\n",
        f"GET /v1/params HTTP/1.1\r\nProxy-Authorization: Basic {TOKEN}\x7f\r\n\r\n",
        # issue 24: aiohttp quotes this value without the header's name ("Invalid HTTP header: b'Bearer ...")
        f"GET /v1/params HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \x00{TOKEN}\r\n\r\n",
        f"GET /v1/params HTTP/1.1\r\nAuthorization: \x00{TOKEN}\r\n\r\n",
        f"GET /v1/params HTTP/1.1\r\nX-Api-Key: {TOKEN}\x00\r\n\r\n",
    ]
    records = await send_malformed(daemon.http_port, [r.encode("latin-1") for r in requests], caplog,
                                   interval_s=1e-9)  # no throttling here: every line is checked
    lines = [r.getMessage() for r in records]
    assert len(lines) == len(requests) and all("malformed HTTP, answered 400 (" in line for line in lines), lines
    assert not any(TOKEN[:8] in line or "Bearer" in line or "\n" in line for line in lines), lines  # no value quoted
    async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
        async with session.get("/v1/params", headers=AUTH) as r:  # still serving
            assert r.status == 200


async def test_malformed_requests_are_logged_once_per_sender_per_interval(plain, caplog):
    _, daemon = plain
    records = await send_malformed(daemon.http_port, [b"GET / HTTP/1.1\r\nX-Probe: \x00\r\n\r\n"] * 20, caplog)
    assert len(records) == 1 and "malformed HTTP" in records[0].getMessage()


async def test_refusals_are_logged_once_per_sender(guarded, caplog):
    session, daemon = guarded
    with caplog.at_level(logging.INFO, logger="bridge.frontends.security"):
        for _ in range(5):
            async with session.get("/v1/params") as r:
                assert r.status == 401
            async with session.get("/v1/params", headers={**AUTH, "Host": "attacker.example"}) as r:
                assert r.status == 403
    messages = [r.getMessage() for r in caplog.records if r.name == "bridge.frontends.security"]
    assert len(messages) == 2 and "missing or wrong token" in messages[0] and "not an allowed host" in messages[1]


def test_refusals_are_logged_once_per_sender_per_interval_truncated_and_bounded(caplog):
    now = [0.0]
    refused = OncePerSender(interval_s=60, max_senders=3, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="bridge.frontends.security"):
        for _ in range(1000):
            refused("unknown", "10.0.0.1", "unknown OSC address %s", "/x" * 30000)
        refused("malformed", "10.0.0.1", "malformed")  # another kind: its own line
        now[0] += 61
        refused("unknown", "10.0.0.1", "unknown OSC address %s", "/y")  # a new interval: one line, with the count
        for host in range(2, 10):  # more senders than tracked: one line says so, once an interval
            refused("unknown", f"10.0.0.{host}", "unknown from %s", host)
    lines = [r.getMessage() for r in caplog.records if r.name == "bridge.frontends.security"]
    assert len(lines) == 6, lines  # (the malformed line's entry expired: room for 10.0.0.2 and 10.0.0.3)
    assert lines[0].startswith("unknown OSC address /x/x") and len(lines[0]) < 400
    assert "(logged once per sender per 60 s)" in lines[0] and lines[1].startswith("malformed")
    assert lines[2].endswith("(logged once per sender per 60 s; 999 more since)")
    assert lines[3].startswith("unknown from 2") and lines[4].startswith("unknown from 3")
    assert lines[5] == "refusals from more than 3 senders in 60 s: no longer logged one by one"
