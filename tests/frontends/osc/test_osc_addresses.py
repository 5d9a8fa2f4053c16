"""The one table of OSC addresses: the parser and the documentation both read it."""

import struct

import aiohttp
import pytest

from bridge.client import osc_message
from bridge.core.errors import ValidationError
from bridge.core.params import FIELDS
from bridge.core.renderer import NullRenderer
from bridge.engine.changes import ChangeDoor
from bridge.engine.scheduler import Scheduler
from bridge.frontends.osc import addresses
from bridge.frontends.osc.addresses import ADDRESSES, CHANGES, as_sent, message_changes
from bridge.frontends.osc.server import OscServer
from bridge.frontends.osc.wire import Float32, parse_datagram
from conftest import null_factory


def test_rows_are_unique_and_say_what_they_take():
    assert len({row.address for row in ADDRESSES}) == len(ADDRESSES)
    for row in ADDRESSES:
        assert row.address.startswith("/bridge/") and row.types and row.doc, row
        assert bool(row.sets) == (row.form in CHANGES and row.form != addresses.JSON), row


def test_every_parameter_has_an_address():
    assert {name for row in ADDRESSES for name in row.sets} == set(FIELDS)


@pytest.mark.parametrize("row", [row for row in ADDRESSES if row.form in addresses.CHANGES], ids=lambda r: r.address)
def test_the_parser_reads_each_row(row):
    """A wrong count is refused with the row's own words; too many arguments never slip through."""
    for count in (0, 3):
        with pytest.raises(ValidationError) as refused:
            message_changes(row.address, ["x"] * count)
        assert refused.value.message.startswith(f"{row.address} takes {row.usage or 'one argument'}")
        assert refused.value.field == (row.sets[0] if row.sets else None)


@pytest.mark.parametrize("address", ["/bridge/subscribe", "/bridge/record", "/bridge/frame", "/bridge/colour",
                                     "/bridge/ch/NAME/ADDRESS"])
def test_addresses_that_set_no_parameter_are_not_changes(address):
    with pytest.raises(KeyError):
        message_changes(address, [1])


def test_a_wired_command_must_be_a_command_of_the_table():
    door = ChangeDoor(Scheduler(NullRenderer(), None))
    with pytest.raises(ValueError, match="/bridge/cue is not a command"):
        OscServer(door, commands={"/bridge/cue": lambda args: None})
    OscServer(door, commands={"/bridge/record": lambda args: None})


@pytest.mark.parametrize("typed", [1.2, 0.1, 2.7, 0.3, 1e-7, 123456.79, -0.8, 3.4e38, 0.0])
def test_floats_read_as_the_shortest_decimal_that_float32_holds(typed):
    sent = Float32(struct.unpack(">f", struct.pack(">f", typed))[0])  # what arrives
    assert as_sent(sent) == typed
    assert as_sent(float(sent)) == float(sent)  # a double ('d') keeps every digit it came with
    message, = parse_datagram(osc_message("/bridge/guidance", typed))
    assert message_changes(message.address, list(message.args)) == {"guidance": typed}


async def test_the_schema_shows_the_table(config, daemon_factory):
    async with daemon_factory(config, renderer_factory=null_factory) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            async with session.get("/v1/schema") as r:
                osc = (await r.json())["osc"]
    assert osc == addresses.schema()
    shown = set(osc) - {"feedback"} | set(osc["feedback"])
    assert shown == {row.address for row in ADDRESSES}
    assert osc["/bridge/size"] == "i i: set width and height"
