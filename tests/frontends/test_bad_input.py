"""Bad input on every interface: each case's answer, and the daemon's state unchanged after it.

``CASES`` is also the table in docs/reliability.md (``test_the_docs_table_is_this_one`` keeps
them the same): interface, input, answer, and words the error message must contain.
"""

import asyncio
import base64
import io
import json
import os
import socket
from pathlib import Path

import aiohttp
from PIL import Image
from pythonosc.osc_message_builder import OscMessageBuilder

from bridge.cli import build_parser, config_from_args
from bridge.client import osc_bundle, osc_message, parse_osc_message
from bridge.core.controls import ControlNetSpec
from bridge.core.errors import BridgeError, ValidationError
from bridge.frontends.http import inputs
from bridge.frontends.security import check_exposure
from conftest import null_factory

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
NUL = "\x00"


def osc(address, *args):
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram


BUNDLE_HEAD = b"#bundle\x00" + b"\x00" * 7 + b"\x01"  # "#bundle", then the timetag "immediately"
BLEND = '{"prompt": [["a cat", 1e308], ["a dog", 1e308]]}'  # each weight finite, their sum inf (issue 24)


def nested_bundles(levels: int) -> bytes:
    data = osc_message("/bridge/seed", 5)
    for _ in range(levels):
        data = osc_bundle(data)
    return data


# (interface, what is sent (markdown), how, answer, the message says)
CASES = [
    ("REST PATCH /v1/params", '`{"seed": "7a"}`', ("patch", b'{"seed": "7a"}'), "400 `seed`",
     "an integer in [0, 2**64)"),
    ("REST PATCH /v1/params", '`{"prompt": 5}`', ("patch", b'{"prompt": 5}'), "400 `prompt`", "must be a string"),
    ("REST PATCH /v1/params", '`{"steps": true}`', ("patch", b'{"steps": true}'), "400 `steps`", "from 1 to 8"),
    ("REST PATCH /v1/params", '`{"width": null}`', ("patch", b'{"width": null}'), "400 `width`", "multiple of 8"),
    ("REST PATCH /v1/params", '`{"seed": -1}`', ("patch", b'{"seed": -1}'), "400 `seed`", "got -1"),
    ("REST PATCH /v1/params", '`{"seed": 18446744073709551616}` (2**64)',
     ("patch", b'{"seed": 18446744073709551616}'), "400 `seed`", "[0, 2**64)"),
    ("REST PATCH /v1/params", '`{"steps": 9}`', ("patch", b'{"steps": 9}'), "400 `steps`", "from 1 to 8"),
    ("REST PATCH /v1/params", '`{"guidance": 30.5}`', ("patch", b'{"guidance": 30.5}'), "400 `guidance`", "[0, 30]"),
    ("REST PATCH /v1/params", '`{"width": 100}`', ("patch", b'{"width": 100}'), "400 `width`", "multiple of 8"),
    ("REST PATCH /v1/params", '`{"height": 4096}`', ("patch", b'{"height": 4096}'), "400 `height`", "--max-size"),
    ("REST PATCH /v1/params", '`{"guidance": NaN}`', ("patch", b'{"guidance": NaN}'), "400 —",
     "NaN is not a number JSON allows"),
    ("REST PATCH /v1/params", '`{"guidance": -Infinity}`', ("patch", b'{"guidance": -Infinity}'), "400 —",
     "-Infinity is not a number JSON allows"),
    ("REST PATCH /v1/params", '`{"guidance": 1e400}` (parses to inf)', ("patch", b'{"guidance": 1e400}'),
     "400 `guidance`", "finite number"),
    ("REST PATCH /v1/params", '`{"width": 1e400}`', ("patch", b'{"width": 1e400}'), "400 `width`", "got inf"),
    ("REST PATCH /v1/params", "body with byte 0xff (not UTF-8)", ("patch", b'{"prompt": "\xff"}'), "400 —",
     "must be UTF-8 JSON"),
    ("REST PATCH /v1/params", '`{"prompt": "\\ud800"}` (lone surrogate)', ("patch", b'{"prompt": "\\ud800"}'),
     "400 `prompt`", "lone surrogate"),
    ("REST PATCH /v1/params", '`{"prompt": "a\\u0000b"}`', ("patch", b'{"prompt": "a\\u0000b"}'), "400 `prompt`",
     "NUL"),
    ("REST PATCH /v1/params", "empty body", ("patch", b""), "400 —", "not valid JSON"),
    ("REST PATCH /v1/params", "`null`, `[1]`, `\"a cat\"`",
     [("patch", b"null"), ("patch", b"[1]"), ("patch", b'"a cat"')], "400 —", "expected a JSON object"),
    ("REST PATCH /v1/params", '`{"colour": 1}`', ("patch", b'{"colour": 1}'), "400 `colour`", "unknown parameter"),
    ("REST PATCH /v1/params", "prompt of 4,001 characters", ("patch", json.dumps({"prompt": "x" * 4001}).encode()),
     "400 `prompt`", "at most 4000 characters"),
    ("REST PATCH /v1/params", "seed of 5,000 digits", ("patch", b'{"seed": ' + b"9" * 5000 + b"}"), "400 —",
     "not valid JSON: Exceeds the limit (4300 digits)"),
    ("REST PATCH /v1/params", "seed as a string of 5,000 digits", ("patch", b'{"seed": "' + b"9" * 5000 + b'"}'),
     "400 `seed`", "an integer in [0, 2**64)"),
    ("REST PATCH /v1/params", "30,000 nested `[`", ("patch", b"[" * 30000), "400 —", "nested too deeply"),
    ("REST PATCH /v1/params", "body of 64 KiB + 1", ("patch", b" " * (64 * 1024 + 1)), "413 —",
     "at most 65536 bytes"),
    ("REST GET /v1/frame.png", "`?after=abc`, `?after=1.5`", [("get", "/v1/frame.png?after=abc"),
                                                                ("get", "/v1/frame.png?after=1.5")],
     "400 `after`", "must be an integer"),
    ("REST GET /v1/frame.png", "`?after=nan`, `?after=inf`",
     [("get", "/v1/frame.png?after=nan"), ("get", "/v1/frame.png?after=inf")], "400 `after`", "must be an integer"),
    ("REST GET /v1/frame.png", "`?after=1_0`, `?after=%205`, `?after=%D9%A1` (Arabic-Indic one)",
     [("get", "/v1/frame.png?after=1_0"), ("get", "/v1/frame.png?after=%205"), ("get", "/v1/frame.png?after=%D9%A1")],
     "400 `after`", "must be an integer"),
    ("REST GET /v1/frame.png", "`?after=-2`, `?after=9223372036854775808` (2**63)",
     [("get", "/v1/frame.png?after=-2"), ("get", "/v1/frame.png?after=9223372036854775808")], "400 `after`",
     "[-1, 9223372036854775807]"),
    ("REST GET /v1/frame.png", "`?timeout=nan`, `?timeout=1_0`, `?timeout=-1`",
     [("get", "/v1/frame.png?timeout=nan"), ("get", "/v1/frame.png?timeout=1_0"), ("get", "/v1/frame.png?timeout=-1")],
     "400 `timeout`", "must be a number in [0, 60]"),
    ("REST GET /v1/frame.rgba", "`?timeout=61`", ("get", "/v1/frame.rgba?timeout=61"), "400 `timeout`", "[0, 60]"),
    ("REST GET /v1/frame.rgba", "`?timeout=` (empty)", ("get", "/v1/frame.rgba?timeout="), "400 `timeout`",
     "got ''"),
    ("REST GET /v1/stream.mjpeg", "`?quality=0`", ("get", "/v1/stream.mjpeg?quality=0"), "400 `quality`",
     "from 1 to 100"),
    ("REST PATCH /v1/params", f"`{BLEND}` (each weight finite, the sum inf; issue 24)",
     ("patch", BLEND.encode()), "400 `prompt`", "add up past the largest number"),
    ("REST PUT /v1/input", "`X-Width` of 5,000 digits", ("put", ({"X-Width": "9" * 5000, "X-Height": "1"}, bytes(4))),
     "400 `X-Width`", "whole number of pixels from 1 to 4096"),
    ("REST PUT /v1/input", "`X-Width: ١٦` (Arabic-Indic digits)",
     ("put", ({"X-Width": "\u0661\u0666", "X-Height": "1"}, bytes(64))), "400 `X-Width`", "(ASCII digits)"),
    ("REST PUT /v1/input", "`X-Height: ²` (superscript two)",
     ("put", ({"X-Width": "1", "X-Height": "\u00b2"}, bytes(4))), "400 `X-Height`", "(ASCII digits)"),
    ("REST PUT /v1/input", "raw RGBA 2x2 with 15 bytes", ("put", ({"X-Width": "2", "X-Height": "2"}, bytes(15))),
     "400 `input`", "must be 16 bytes"),
    ("REST any", "`DELETE /v1/params` (a method the route lacks)", ("delete", "/v1/params"), "405 —",
     "Method Not Allowed"),
    ("REST any", "`GET /v1/nope`", ("get", "/v1/nope"), "404 —", "Not Found"),
    ("WebSocket open", "`/v1/ws?format=bmp`", ("ws-open", "/v1/ws?format=bmp"), "400 `format`", "jpeg, png, rgba"),
    ("WebSocket open", "`/v1/ws?quality=%C2%B2` (superscript two)", ("ws-open", "/v1/ws?quality=%C2%B2"),
     "400 `quality`", "from 1 to 100"),
    ("WebSocket open", "`/v1/ws?quality=` and 5,000 zeros then 7", ("ws-open", "/v1/ws?quality=" + "0" * 5000 + "7"),
     "400 `quality`", "from 1 to 100"),
    ("WebSocket message", "`not json`", ("ws", "not json"), "error reply —", "not valid JSON"),
    ("WebSocket message", "empty text", ("ws", ""), "error reply —", "not valid JSON"),
    ("WebSocket message", "`[1]`", ("ws", "[1]"), "error reply —", "expected a JSON object"),
    ("WebSocket message", '`{"colour": 1}`', ("ws", '{"colour": 1}'), "error reply `colour`", "unknown message key"),
    ("WebSocket message", '`{"params": {"seed": -1}}`', ("ws", '{"params": {"seed": -1}}'), "error reply `seed`",
     "got -1"),
    ("WebSocket message", '`{"params": {"guidance": NaN}}`', ("ws", '{"params": {"guidance": NaN}}'),
     "error reply —", "NaN is not a number"),
    ("WebSocket message", '`{"format": ["png"]}`', ("ws", '{"format": ["png"]}'), "error reply `format`",
     "jpeg, png, rgba"),
    ("WebSocket message", '`{"quality": 1.5}`', ("ws", '{"quality": 1.5}'), "error reply `quality`", "from 1 to 100"),
    ("WebSocket message", '`{"params": {"seed": 1}, "format": "gif"}` (one bad part)',
     ("ws", '{"params": {"seed": 1}, "format": "gif"}'), "error reply `format`", "jpeg, png, rgba"),
    ("WebSocket message", "a 2-byte binary message (binary messages are input images)", ("ws", b"\x00\x01"),
     "error reply `input`", "20-byte TBI1 header"),
    ("WebSocket message", "text frame with byte 0xff (not UTF-8)", ("ws-raw", b"\xff\xfe"), "closed 1007", ""),
    ("WebSocket message", "text of 64 KiB + 1", ("ws", "x" * (64 * 1024 + 1)), "closed 1009", ""),
    ("OSC", "`/bridge/seed s \"7a\"`", ("osc", osc_message("/bridge/seed", "7a")), "rejected, `/bridge/error`",
     "an integer in [0, 2**64)"),
    ("OSC", "`/bridge/seed s` of 5,000 digits", ("osc", osc_message("/bridge/seed", "9" * 5000)),
     "rejected, `/bridge/error`", "an integer in [0, 2**64)"),
    ("OSC", "`/bridge/seed i -5`", ("osc", osc_message("/bridge/seed", -5)), "rejected, `/bridge/error`", "got -5"),
    ("OSC", "`/bridge/seed f 1.5`", ("osc", osc_message("/bridge/seed", 1.5)), "rejected, `/bridge/error`",
     "got 1.5"),
    ("OSC", "`/bridge/steps T` (boolean)", ("osc", osc("/bridge/steps", True)), "rejected, `/bridge/error`",
     "got True"),
    ("OSC", "`/bridge/guidance f NaN`", ("osc", osc_message("/bridge/guidance", float("nan"))),
     "rejected, `/bridge/error`", "finite number"),
    ("OSC", "`/bridge/guidance f inf`", ("osc", osc_message("/bridge/guidance", float("inf"))),
     "rejected, `/bridge/error`", "finite number"),
    ("OSC", "`/bridge/prompt i 5`", ("osc", osc_message("/bridge/prompt", 5)), "rejected, `/bridge/error`",
     "must be a string"),
    ("OSC", "`/bridge/prompt b` (a blob)", ("osc", osc("/bridge/prompt", b"abc")), "rejected, `/bridge/error`",
     "must be a string"),
    ("OSC", "`/bridge/prompt s` of 60,000 characters", ("osc", osc_message("/bridge/prompt", "x" * 60000)),
     "rejected, `/bridge/error`", "at most 4000 characters"),
    ("OSC", "`/bridge/params s '" + BLEND + "'`", ("osc", osc_message("/bridge/params", BLEND)),
     "rejected, `/bridge/error`", "add up past the largest number"),
    ("OSC", "`/bridge/prompt` with no argument", ("osc", osc_message("/bridge/prompt")), "rejected, `/bridge/error`",
     "takes one argument"),
    ("OSC", "`/bridge/size i 64` (one of two)", ("osc", osc_message("/bridge/size", 64)), "rejected, `/bridge/error`",
     "two integers"),
    ("OSC", "`/bridge/params s \"not json\"`", ("osc", osc_message("/bridge/params", "not json")),
     "rejected, `/bridge/error`", "not valid JSON"),
    ("OSC", "`/bridge/params s` of 30,000 nested `[`", ("osc", osc_message("/bridge/params", "[" * 30000)),
     "rejected, `/bridge/error`", "not valid JSON"),
    ("OSC", '`/bridge/params s \'{"prompt": "\\ud800"}\'`',
     ("osc", osc_message("/bridge/params", '{"prompt": "\\ud800"}')),
     "rejected, `/bridge/error`", "lone surrogate"),
    ("OSC", "bundle: a good message and `/bridge/steps i 99`",
     ("osc", osc_bundle(osc_message("/bridge/prompt", "no"), osc_message("/bridge/steps", 99))),
     "rejected, `/bridge/error`", "from 1 to 8"),
    ("OSC", "`/bridge/colour i 3`", ("osc", osc_message("/bridge/colour", 3)), "unknown, `/bridge/error`",
     "unknown address /bridge/colour"),
    ("OSC", "`/bridge/subscribe i 70000`", ("osc", osc_message("/bridge/subscribe", 70000)),
     "rejected, `/bridge/error`", "port in 1..65535"),
    ("OSC", "string with byte 0xff (not UTF-8)", ("osc", b"/bridge/prompt\x00\x00,s\x00\x00\xff\xfe\x00\x00"),
     "malformed, no reply", ""),
    ("OSC", "empty datagram", ("osc", b""), "malformed, no reply", ""),
    ("OSC", "truncated bundle `#bundle\\0`", ("osc", b"#bundle\x00"), "malformed, no reply", ""),
    ("OSC", "bundle element of size -4 (`ff ff ff fc`; froze the daemon in python-osc 1.10.2)",
     ("osc", BUNDLE_HEAD + b"\xff\xff\xff\xfc"), "malformed, no reply", ""),
    ("OSC", "bundle element sizes of 6 (unaligned) and 65,536 (past the end)",
     [("osc", BUNDLE_HEAD + b"\x00\x00\x00\x06" + osc_message("/a")),
      ("osc", BUNDLE_HEAD + b"\x00\x01\x00\x00" + osc_message("/bridge/seed", 1))], "malformed, no reply", ""),
    ("OSC", "400 nested bundles (9 and more are refused)", ("osc", nested_bundles(400)), "malformed, no reply", ""),
    ("OSC", "60 KB of unknown type tags `,xxx...`",
     ("osc", b"/bridge/seed\x00\x00\x00\x00" + (b"," + b"x" * 60000).ljust(60004, b"\x00")), "malformed, no reply",
     ""),
    ("OSC", "blob of size -4", ("osc", b"/bridge/prompt\x00\x00,b\x00\x00\xff\xff\xff\xfc"), "malformed, no reply", ""),
    ("OSC", "unknown address of 60,000 characters", ("osc", osc_message("/bridge/" + "x" * 60000, 1)),
     "unknown, `/bridge/error`", "... (60008 characters)"),
    ("OSC", "one bundle subscribing 5 ports", ("osc", osc_bundle(*[osc_message("/bridge/subscribe", port)
                                                                 for port in range(1, 6)])),
     "rejected, `/bridge/error`", "at most 4 OSC feedback ports per sender"),
    ("CLI serve", "`--width 500`", ("cli", ["--width", "500"]), "exit 2", "multiple of 8"),
    ("CLI serve", "`--guidance nan`", ("cli", ["--guidance", "nan"]), "exit 2", "finite number"),
    ("CLI serve", "`--max-size 100`", ("cli", ["--max-size", "100"]), "exit 2", "multiple of 8"),
    ("CLI serve", "`--http-port 70000`", ("cli", ["--http-port", "70000"]), "exit 2", "port must be in 0..65535"),
    ("CLI serve", "`--host 0.0.0.0` alone", ("cli", ["--host", "0.0.0.0"]), "exit 2", "refusing to start without"),
    ("CLI serve", "`--token short`", ("cli", ["--token", "short"]), "exit 2", "at least 16"),
    ("CLI serve", "`--max-connections 0`", ("cli", ["--max-connections", "0"]), "exit 2", "must be at least 1"),
    ("CLI serve", "`--osc-allow stage-pc`", ("cli", ["--osc-allow", "stage-pc"]), "exit 2", "IP addresses or networks"),
]


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height)).save(out, "PNG")
    return out.getvalue()


# ControlNets (issue 15): the daemon of the test has one ControlNet, "depth".
CONTROLNETS = (ControlNetSpec("depth", "demo"),)
CASES += [
    ("REST PATCH /v1/params", '`{"controls": {"pose": 1}}`', ("patch", b'{"controls": {"pose": 1}}'),
     "400 `controls`", "no ControlNet named 'pose'; loaded: depth"),
    ("REST PATCH /v1/params", '`{"controls": {"depth": 2.5}}`', ("patch", b'{"controls": {"depth": 2.5}}'),
     "400 `controls`", "from 0 (off) to 2"),
    ("REST PATCH /v1/params", '`{"controls": {"depth": {"start": 0.9, "end": 0.1}}}`',
     ("patch", b'{"controls": {"depth": {"start": 0.9, "end": 0.1}}}'), "400 `controls`", "must not be after end"),
    ("REST PATCH /v1/params", '`{"controls": {"depth": {"preprocess": "sobel"}}}`',
     ("patch", b'{"controls": {"depth": {"preprocess": "sobel"}}}'), "400 `controls`", "one of none, canny"),
    ("REST PUT /v1/control/pose", "a PNG for an unknown ControlNet", ("put-to", ("/v1/control/pose", "image/png", {},
                                                                             png(8, 8))),
     "404 `control`", "no ControlNet named 'pose'"),
    ("REST PUT /v1/control/depth", "a PNG of 5000x1", ("put-to", ("/v1/control/depth", "image/png", {}, png(5000, 1))),
     "400 `control`", "1 to 4096 pixels a side"),
    ("REST PUT /v1/control/depth", "raw RGBA, 12 bytes for 2x2",
     ("put-to", ("/v1/control/depth", "application/octet-stream", {"X-Width": "2", "X-Height": "2"}, b"\0" * 12)),
     "400 `control`", "must be 16 bytes"),
    ("REST PUT /v1/control/depth", "`Content-Type: image/gif`",
     ("put-to", ("/v1/control/depth", "image/gif", {}, b"GIF89a")), "415 `control`", "Content-Type must be one of"),
    ("WebSocket", "a TBC1 control image for an unknown ControlNet",
     ("ws", inputs.pack_ws_input("png", png(8, 8), control="pose")), "error reply `control`",
     "no ControlNet named 'pose'"),
    ("OSC", "`/bridge/control s f depth 3.0`", ("osc", osc_message("/bridge/control", "depth", 3.0)),
     "rejected, `/bridge/error`", "from 0 (off) to 2"),
    ("OSC", "`/bridge/control s depth` (no scale)", ("osc", osc_message("/bridge/control", "depth")),
     "rejected, `/bridge/error`", "takes a ControlNet name and a scale"),
    ("CLI serve", "`--controlnet depth`", ("cli", ["--controlnet", "depth"]), "exit 2", "NAME=SOURCE"),
    ("CLI serve", "`--controlnet Depth=demo`", ("cli", ["--controlnet", "Depth=demo"]), "exit 2", "must be 1-32"),
    ("CLI serve", "`--controlnet a=demo --controlnet a=random`",
     ("cli", ["--controlnet", "a=demo", "--controlnet", "a=random"]), "exit 2", "must be unique"),
    ("CLI serve", "`--canny-thresholds 200,100`", ("cli", ["--canny-thresholds", "200,100"]), "exit 2",
     "0 <= LOW <= HIGH"),
]


def markdown_table() -> str:
    rows = ["| interface | input | answer | the message says |", "| --- | --- | --- | --- |"]
    for interface, shown, _, answer, says in CASES:
        rows.append(f"| {interface} | {shown} | {answer} | {('`' + says.replace('|', '/') + '`') if says else '—'} |")
    return "\n".join(rows)


async def raw_ws_text(port: int, payload: bytes) -> int:
    """Open a WebSocket by hand and send one masked text frame (aiohttp's client only sends valid UTF-8)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    mask = os.urandom(4)
    writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    await writer.drain()
    while True:  # skip the hello, params and frame messages to the close frame
        head = await asyncio.wait_for(reader.readexactly(2), 5)
        length = head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await reader.readexactly(8), "big")
        body = await reader.readexactly(length)
        if head[0] & 0x0F == 0x8:
            writer.close()
            return int.from_bytes(body[:2], "big")


async def answer(how, session, daemon, listener) -> tuple[str, str]:
    """Send one case; return (answer, message)."""
    kind, data = how
    if kind in ("patch", "get", "delete", "ws-open"):
        headers = {"Connection": "Upgrade", "Upgrade": "websocket"} if kind == "ws-open" else {}
        method = {"ws-open": "GET"}.get(kind, kind.upper())
        async with session.request(method, data if kind != "patch" else "/v1/params",
                                   data=data if kind == "patch" else None, headers=headers) as r:
            error = (await r.json())["error"]
        field = f"`{error['field']}`" if error["field"] else "—"
        return f"{r.status} {field}", error["message"]
    if kind == "put":  # raw RGBA input with these headers
        headers, body = data
        async with session.put("/v1/input", data=body, headers={"Content-Type": "application/octet-stream",
                                                                 **headers}) as r:
            error = (await r.json())["error"]
        return f"{r.status} `{error['field']}`", error["message"]
    if kind == "put-to":  # a route, a Content-Type, headers, a body
        path, content_type, headers, body = data
        async with session.put(path, data=body, headers={"Content-Type": content_type, **headers}) as r:
            error = (await r.json())["error"]
        return f"{r.status} `{error['field']}`", error["message"]
    if kind == "ws-raw":
        return f"closed {await raw_ws_text(daemon.http_port, data)}", ""
    if kind == "ws":
        async with session.ws_connect("/v1/ws", max_msg_size=0) as ws:
            await (ws.send_bytes(data) if isinstance(data, bytes) else ws.send_str(data))
            while True:
                msg = await asyncio.wait_for(ws.receive(), 5)
                if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == "error":
                    error = json.loads(msg.data)["error"]
                    return f"error reply {'`' + error['field'] + '`' if error['field'] else '—'}", error["message"]
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    return f"closed {msg.data}", ""  # the code the daemon sent
                assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
    if kind == "osc":
        stats = daemon.osc.stats
        before = (stats.rejected, stats.malformed, stats.unknown)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(data, ("127.0.0.1", daemon.osc_port))
        for _ in range(500):
            if (stats.rejected, stats.malformed, stats.unknown) != before:
                break
            await asyncio.sleep(0.01)
        counted = [name for name, old, new in zip(("rejected", "malformed", "unknown"), before,
                                                   (stats.rejected, stats.malformed, stats.unknown)) if new != old]
        try:
            while True:  # feedback: skip /bridge/frame, wait for /bridge/error
                address, args = parse_osc_message(await asyncio.wait_for(asyncio.get_running_loop().sock_recv(
                    listener, 65536), 0.3))
                if address == "/bridge/error":
                    return f"{counted[0]}, `{address}`", args[0]
        except asyncio.TimeoutError:
            return f"{counted[0]}, no reply", ""
    if kind == "cli":
        try:  # what `turbo-bridge serve` does before it loads anything
            config = config_from_args(build_parser().parse_args(["serve", *data]))
            check_exposure(config.host, config.access)
        except ValidationError as exc:
            return "exit 2", exc.message
        except BridgeError as exc:
            return "exit 2", str(exc)
        except SystemExit as exc:
            return f"exit {exc.code}", ""
        return "accepted", ""
    raise AssertionError(kind)


async def test_every_case_gets_its_answer_and_changes_nothing(config, daemon_factory, capsys):
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.setblocking(False)
    wrong = []
    async with daemon_factory(config, renderer_factory=null_factory, controlnets=CONTROLNETS) as daemon:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # feedback for this test's senders' host
            sock.sendto(osc_message("/bridge/subscribe", listener.getsockname()[1]), ("127.0.0.1", daemon.osc_port))
        await daemon.scheduler.next_frame(0, 5)
        before = (daemon.scheduler.params, daemon.scheduler.version)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            for interface, shown, hows, expected, says in CASES:
                for how in hows if isinstance(hows, list) else [hows]:
                    got, message = await answer(how, session, daemon, listener)
                    if how[0] == "cli" and how[1][0] == "--http-port":
                        message = capsys.readouterr().err  # argparse prints its own message
                    if got != expected or says not in message:
                        wrong.append(f"{interface} {how}: got {got} {message[:200]!r}, expected {expected} {says!r}")
                    if (daemon.scheduler.params, daemon.scheduler.version) != before:
                        wrong.append(f"{interface} {shown}: changed the state to {daemon.scheduler.params}")
                        before = (daemon.scheduler.params, daemon.scheduler.version)
        assert daemon.health()["status"] == "ok"  # nothing above reached the renderer
    listener.close()
    assert not wrong, "\n".join(wrong)


def test_the_docs_table_is_this_one():
    assert markdown_table() in DOC.read_text(), "docs/reliability.md's table differs; paste:\n" + markdown_table()
