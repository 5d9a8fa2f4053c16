"""The daemon's OSC parser: python-osc's values for what python-osc reads well, one MalformedOsc otherwise."""

import logging
import math
import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from bridge.client import osc_bundle, osc_message
from bridge.frontends.osc.wire import MAX_DEPTH, MalformedOsc, Message, parse_datagram

# The datagram that froze the daemon: python-osc 1.10.2 steps back onto the same size field forever.
FREEZER = b"#bundle\x00" + b"\x00" * 7 + b"\x01" + b"\xff\xff\xff\xfc"


def nested(levels: int, inner: bytes = osc_message("/bridge/seed", 5)) -> bytes:
    data = inner
    for _ in range(levels):
        data = osc_bundle(data)
    return data


def python_osc(data: bytes) -> list[Message]:
    """What python-osc makes of a datagram (only called on datagrams that cannot make it hang)."""
    return [Message(t.message.address, tuple(t.message.params)) for t in OscPacket(data).messages]


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def test_the_freezing_datagram_is_malformed():
    with pytest.raises(MalformedOsc, match="size -4"):
        parse_datagram(FREEZER)


@pytest.mark.parametrize("size", [0, -4, -8, -2**31, 3, 6, 2**31 - 1, 28])
def test_element_sizes_must_be_positive_aligned_and_in_bounds(size):
    message = osc_message("/bridge/seed", 5)  # 24 bytes: 28 runs past the end
    data = b"#bundle\x00" + b"\x00" * 7 + b"\x01" + struct.pack(">i", size) + message
    with pytest.raises(MalformedOsc, match=f"size {size}"):
        parse_datagram(data)


def test_nesting_is_limited_without_recursion_errors():
    assert parse_datagram(nested(MAX_DEPTH)) == [Message("/bridge/seed", (5,))]
    for levels in (MAX_DEPTH + 1, 400, 4000):
        with pytest.raises(MalformedOsc, match="nested deeper"):
            parse_datagram(nested(levels))
    with pytest.raises(MalformedOsc, match="arrays nested deeper"):
        parse_datagram(b"/a\x00\x00" + (b"," + b"[" * 20 + b"]" * 20).ljust(44, b"\x00"))


def test_unknown_type_tags_are_one_error_not_a_warning_each(caplog):
    data = b"/bridge/seed\x00\x00\x00\x00" + (b"," + b"x" * 60000).ljust(60004, b"\x00")
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(MalformedOsc, match="unknown type tag 'x'"):
            parse_datagram(data)
    assert not caplog.records  # python-osc logs 60,000 warnings for this one


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"\x00\x01garbage", "neither"),
    (b"#bundle\x00\x00\x00", "timetag"),
    (b"#bundle\x00" + b"\x00" * 8 + b"\x00\x00", "a size takes 4"),
    (b"#bundle\x00" + b"\x00" * 8 + b"\x00\x00\x00\x04abcd", "neither a message nor a bundle"),
    (b"/bridge/prompt\x00\x00,s\x00\x00\xff\xfe\x00\x00", "not UTF-8"),
    (b"/bridge/prompt", "no terminating NUL"),
    (b"/bridge/seed\x00\x00\x00\x00i\x00\x00\x00", "must start with ','"),
    (b"/bridge/seed\x00\x00\x00\x00,i\x00\x00\x00\x00", "datagram too short"),
    (b"/b\x00\x00,b\x00\x00\xff\xff\xff\xfc", "blob at byte 8: size -4 "),
    (b"/b\x00\x00,b\x00\x00\x00\x00\x01\x00", "does not fit"),
    (b"/b\x00\x00,]\x00\x00", "']' without '['"),
    (b"/b\x00\x00,[\x00\x00", "'[' without ']'"),
])
def test_malformed_datagrams_say_why(data, reason):
    with pytest.raises(MalformedOsc) as error:
        parse_datagram(data)
    assert reason in str(error.value)


def test_what_python_osc_reads_reads_the_same():
    builder = OscMessageBuilder("/all")
    for value, tag in [(7, "i"), (2**40, "h"), (0.5, "f"), (0.25, "d"), ("über", "s"), (b"\x01\x02\x03", "b"),
                       (0x11223344, "r"), ((1, 2, 3, 4), "m"), (True, "T"), (False, "F"), (None, "N"),
                       ([1, [2.5, "x"]], None)]:
        builder.add_arg(value, tag) if tag else builder.add_arg(value)
    data = builder.build().dgram
    ours, theirs = parse_datagram(data), python_osc(data)
    assert len(ours) == 1 and ours[0].address == "/all"
    assert same(list(ours[0].args), list(theirs[0].args))
    assert parse_datagram(b"/bridge/seed\x00\x00\x00\x00") == [Message("/bridge/seed", ())]  # no type tags
    assert parse_datagram(b"/a\x00\x00,f\x00\x00") == [Message("/a", (0.0,))]  # a float cut short: padded


def test_bundle_messages_come_in_python_osc_order():
    later = OscBundleBuilder(1893456000)  # 2030-01-01: after the immediate ones in python-osc's sort
    later.add_content(OscMessageBuilder("/late").build())
    outer = OscBundleBuilder(IMMEDIATELY)
    outer.add_content(later.build())
    outer.add_content(OscMessageBuilder("/now").build())
    data = outer.build().dgram
    assert [m.address for m in parse_datagram(data)] == [m.address for m in python_osc(data)] == ["/now", "/late"]
    assert parse_datagram(osc_bundle()) == [] == python_osc(osc_bundle())


osc_values = st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(-(2**63), 2**63 - 1),
                       st.floats(width=32), st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"),
                                                    max_size=20), st.booleans(), st.none(),
                       st.binary(min_size=1, max_size=9))
messages = st.builds(lambda address, args: (address, args),
                     st.text(alphabet="abc/_", max_size=12).map(lambda a: "/" + a), st.lists(osc_values, max_size=4))


def build(message) -> bytes:
    builder = OscMessageBuilder(message[0])
    for arg in message[1]:
        builder.add_arg(arg)
    return builder.build().dgram


def mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for index, value in flips:
        out[index % len(out)] = value
    return bytes(out[:cut]) if cut is not None else bytes(out)


def bundles_of(inner):
    return st.lists(inner, max_size=3).map(lambda parts: osc_bundle(*parts))


datagrams = messages.map(build)
for _ in range(3):  # bundles nested up to 3 levels (within MAX_DEPTH: all well-formed)
    datagrams = datagrams | bundles_of(datagrams)


@given(st.builds(mutate, datagrams, st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=3),
                 st.none() | st.integers(0, 400)))
@example(FREEZER)
@example(nested(MAX_DEPTH))
def test_whatever_we_accept_python_osc_reads_identically(data):
    """A datagram we accept is sound, so python-osc cannot hang on it: it must give the same messages."""
    try:
        ours = parse_datagram(data)
    except MalformedOsc:
        return
    theirs = python_osc(data)
    assert [m.address for m in ours] == [m.address for m in theirs]
    assert all(same(list(a.args), list(b.args)) for a, b in zip(ours, theirs))


@given(datagrams)
def test_every_well_formed_datagram_is_accepted(data):
    assert len(parse_datagram(data)) == len(python_osc(data))
