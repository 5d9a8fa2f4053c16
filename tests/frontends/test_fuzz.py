"""Property tests (hypothesis): parameter parsing, JSON and format parsing, OSC decoding on both ends.

Each property: any input gives a clean value or the one documented error, never another
exception; valid input round-trips. Example counts are modest to keep the file fast.
"""

import json
import math
import os
import struct
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pythonosc.osc_message import OscMessage

from bridge.client import osc_bundle, osc_message, parse_osc_message
from bridge.core.errors import ValidationError
from bridge.core.params import FIELDS, MAX_GUIDANCE, MAX_PROMPT_CHARS, SEED_LIMIT, Limits, Params, parse_changes
from bridge.core.renderer import NullRenderer
from bridge.engine.changes import ChangeDoor
from bridge.engine.scheduler import Scheduler
from bridge.frontends.http.rest import loads_strict
from bridge.frontends.http.streams import StreamFormat
from bridge.frontends.osc.server import OscServer

# 300 examples a property in the suite; TB_HYPOTHESIS=long runs 5,000 (docs/reliability.md records one).
settings.register_profile("fast", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("TB_HYPOTHESIS", "fast"))
LIMITS = Limits(max_size=1024)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=50),
    st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(["\ud800", "\x00", "٣", "²"]), max_size=20),
    st.sampled_from(["7", " 42 ", "18446744073709551615", "18446744073709551616", "-1", "1e3", "0x10",
                     "9" * 5000, "0" * 5000 + "7"]),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8), inner, max_size=4), max_leaves=12)
changes = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), json_values, max_size=7)


def check_clean(clean: dict) -> None:
    """What every accepted value satisfies (the renderer relies on it)."""
    for field, value in clean.items():
        assert field in FIELDS
        if field in ("prompt", "negative_prompt"):
            texts = [value] if isinstance(value, str) else [text for text, _ in value]
            for text in texts:
                assert isinstance(text, str) and len(text) <= MAX_PROMPT_CHARS and "\x00" not in text
                text.encode("utf-8")  # strict: no lone surrogates
            if not isinstance(value, str):
                assert all(type(w) is float and math.isfinite(w) and w >= 0 for _, w in value)
        elif field == "guidance":
            assert type(value) is float and math.isfinite(value) and 0 <= value <= MAX_GUIDANCE
        elif field in ("strength", "seed_mix"):
            assert type(value) is float and 0 <= value <= 1
        elif field == "input":
            assert type(value) is bool
        elif field == "loras":  # parsed: (name, weight) pairs; to_json: an object
            pairs = value.items() if isinstance(value, dict) else value
            assert all(isinstance(n, str) and "/" not in n and type(w) is float and -2 <= w <= 2 for n, w in pairs)
        elif field == "controls":
            assert not value  # no ControlNet loaded here: only an empty change is accepted
        elif field == "tiling":
            assert value in ("none", "x", "y", "xy")
        elif field == "style_scale":  # no IP-Adapter loaded here: only 0 (off) is accepted
            assert type(value) is float and value == 0
        else:
            assert type(value) is int
            low, high = {"seed": (0, SEED_LIMIT - 1), "seed2": (0, SEED_LIMIT - 1), "steps": (1, 8),
                         "transition_frames": (0, 600)}.get(field, (64, LIMITS.max_size))
            assert low <= value <= high
            if field in ("width", "height"):
                assert value % 8 == 0


@given(changes | json_values)
@example({"seed": 1e19})
@example({"prompt": "\ud800"})
@example({"width": float("inf")})
def test_parse_changes_accepts_clean_values_or_raises_validation_error(raw):
    try:
        clean = parse_changes(raw, LIMITS)
    except ValidationError as exc:
        assert exc.message and (exc.field is None or isinstance(exc.field, str))
        json.dumps(exc.to_json())  # the error itself is always sendable
        return
    check_clean(clean)
    merged = Params().merged(clean)
    assert json.loads(json.dumps(merged.to_json())) == merged.to_json()  # no NaN, nothing unencodable
    # Idempotent on the wire: the clean change, as the daemon shows it in JSON, parses back to itself
    # (LoRAs and controls are tuples inside, objects on the wire).
    shown = merged.to_json()
    assert parse_changes({name: shown[name] for name in clean}, LIMITS) == clean


valid = st.fixed_dictionaries({}, optional={
    "prompt": st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=MAX_PROMPT_CHARS),
    "seed": st.integers(0, SEED_LIMIT - 1),
    "steps": st.integers(1, 8),
    "guidance": st.floats(0, MAX_GUIDANCE),
    "width": st.integers(8, 128).map(lambda n: n * 8),
    "height": st.integers(8, 128).map(lambda n: n * 8),
})


@given(valid)
def test_every_valid_change_is_accepted_unchanged(raw):
    assert parse_changes(raw, LIMITS) == raw
    assert parse_changes(json.loads(json.dumps(raw)), LIMITS) == raw  # and after a JSON round trip


@given(st.text(max_size=200) | st.sampled_from(["NaN", "[" * 5000, '{"a": Infinity}', "1e400", "-0"]))
def test_loads_strict_returns_json_or_raises_value_error(text):
    try:
        value = loads_strict(text)
    except ValueError:
        return
    assert "NaN" not in json.dumps(value)  # (1e400 may parse to inf: the fields refuse it later)


@given(st.dictionaries(st.sampled_from(["format", "quality", "other"]), json_values, max_size=3))
def test_stream_format_parse_returns_a_format_or_raises_validation_error(raw):
    try:
        fmt = StreamFormat.parse(raw)
    except ValidationError as exc:
        assert exc.field in ("format", "quality")
        return
    assert fmt.kind in ("jpeg", "png", "rgba") and type(fmt.quality) is int and 1 <= fmt.quality <= 100


# -- OSC ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def osc_server():
    executor = ThreadPoolExecutor(1)
    yield OscServer(ChangeDoor(Scheduler(NullRenderer(), executor, limits=LIMITS)))
    executor.shutdown()


ADDRESSES = ["/bridge/prompt", "/bridge/seed", "/bridge/guidance", "/bridge/steps", "/bridge/width",
             "/bridge/height", "/bridge/size", "/bridge/params", "/bridge/subscribe", "/bridge/unsubscribe", "/x"]
osc_args = st.lists(st.one_of(st.text(max_size=30), st.integers(-(2**63), 2**63 - 1), st.floats(width=32),
                              st.sampled_from(['{"seed": 5}', '{"width": 64, "height": 72}', "[" * 3000])),
                    max_size=3)


def mutate(data: bytes, cuts: list[int], flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for index, value in flips:
        if out:
            out[index % len(out)] = value
    for cut in cuts:
        out = out[:cut % (len(out) + 1)]
    return bytes(out)


# The datagram that froze the daemon (issue 12): python-osc 1.10.2 re-read this element size forever.
FREEZER = b"#bundle\x00" + b"\x00" * 7 + b"\x01" + b"\xff\xff\xff\xfc"


def raw_bundle(elements: list[tuple[int, bytes]], timetag: bytes) -> bytes:
    """A bundle whose element sizes say anything (negative, unaligned, past the end)."""
    return b"#bundle\x00" + timetag + b"".join(struct.pack(">i", size) + body for size, body in elements)


def nest(data: bytes, levels: int) -> bytes:
    for _ in range(levels):
        data = osc_bundle(data)
    return data


@given(st.one_of(
    st.binary(max_size=200),
    st.builds(raw_bundle, st.lists(st.tuples(st.integers(-(2**31), 2**31 - 1) | st.sampled_from([-4, 0, 4, 6, 20]),
                                             st.binary(max_size=24) | st.just(osc_message("/bridge/seed", 3))),
                                   max_size=3), st.binary(min_size=0, max_size=8)),
    st.builds(nest, st.just(osc_message("/bridge/seed", 6)), st.integers(0, 500)),
    st.builds(lambda a, args: osc_message(a, *args), st.sampled_from(ADDRESSES), osc_args),
    st.builds(lambda msgs: osc_bundle(*msgs), st.lists(st.builds(lambda a, args: osc_message(a, *args),
                                                                 st.sampled_from(ADDRESSES), osc_args), max_size=3)),
    st.builds(mutate, st.builds(lambda a, args: osc_message(a, *args), st.sampled_from(ADDRESSES), osc_args),
              st.lists(st.integers(0, 300), max_size=1), st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)),
                                                                  max_size=3)),
))
@example(FREEZER)
@example(nest(osc_message("/bridge/seed", 6), 400))  # RecursionError in python-osc
@example(b"/bridge/seed\x00\x00\x00\x00" + (b"," + b"x" * 60000).ljust(60004, b"\x00"))  # a warning a tag
def test_any_datagram_is_counted_once_and_never_raises(osc_server, data):
    stats = osc_server.stats
    before = (stats.applied, stats.rejected, stats.malformed, stats.unknown)
    sched = osc_server._door.main
    version_before, params_before = sched.version, sched.params
    osc_server.datagram_received(data, ("127.0.0.1", 9))
    after = (stats.applied, stats.rejected, stats.malformed, stats.unknown)
    assert sum(after) - sum(before) <= 1  # exactly one outcome (none: subscriptions, empty bundles)
    if after[0] == before[0]:  # not applied: the state is untouched
        assert (sched.version, sched.params) == (version_before, params_before)
    check_clean({k: v for k, v in sched.params.to_json().items()})
    osc_server.subscribers.clear()


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40)
       .map(lambda s: "/" + s), st.lists(st.one_of(
           st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40),
           st.integers(-(2**63), 2**63 - 1), st.floats(width=32, allow_nan=False)), max_size=5))
def test_client_encoder_round_trips_through_python_osc_and_back(address, args):
    data = osc_message(address, *args)
    assert len(data) % 4 == 0
    parsed = OscMessage(data)
    assert parsed.address == address and list(parsed.params) == args
    assert parse_osc_message(data) == (address, args)


@given(st.binary(max_size=120) | st.builds(mutate, st.builds(
    lambda args: osc_message("/bridge/frame", *args), st.lists(st.integers(-(2**40), 2**40) | st.text(max_size=5)
                                                               | st.floats(width=32), max_size=3)),
    st.lists(st.integers(0, 100), max_size=1), st.lists(st.tuples(st.integers(0, 100), st.integers(0, 255)),
                                                        max_size=2)))
@example(b"/bridge/frame\x00\x00\x00,i\x00\x00\x00\x01")  # truncated integer
@example(b"/a\x00\x00,f\x00\x00")  # a float tag without its bytes
def test_client_decoder_raises_only_value_error(data):
    """Plugins decode the daemon's feedback with this; garbage must not raise anything unexpected."""
    try:
        address, args = parse_osc_message(data)
    except ValueError:
        return
    assert isinstance(address, str) and isinstance(args, list)
