"""OSC messages built with python-osc, as a third-party sender builds them."""

from pythonosc.osc_message_builder import OscMessageBuilder


def message(address, *args):
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build()
