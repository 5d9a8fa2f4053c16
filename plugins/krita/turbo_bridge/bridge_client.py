"""``bridge.client``: the copy ``build.py`` bundles into the plugin, else an installed turbo-bridge."""

try:
    from ._vendor.bridge.client import (BridgeHTTPError, DaemonAddress, HttpClient, ShmReader, check_channel,
                                        parse_address, segment_name, to_rgba8)
except ImportError:  # running from the repository (tests, development)
    from bridge.client import (BridgeHTTPError, DaemonAddress, HttpClient, ShmReader, check_channel, parse_address,
                               segment_name, to_rgba8)

__all__ = ["BridgeHTTPError", "DaemonAddress", "HttpClient", "ShmReader", "check_channel", "parse_address",
           "segment_name", "to_rgba8"]
