"""What every plugin imports: check the daemon address a user typed, read frames from shared memory,
send changes over OSC or HTTP, send input images (HTTP, or an input segment of its own that the daemon polls).

Stdlib and numpy only (it runs inside Blender, Krita and TouchDesigner), and self-contained: a
plugin vendors this folder whole (``layout`` is the shared-memory wire format, which the daemon's
writer imports from here). It never unlinks the daemon's segment, on any Python version.
"""

from .address import DaemonAddress, parse_address
from .channels import check_channel, http_path, osc_address, segment_name
from .http import BridgeHTTPError, HttpClient
from .osc import OscSender, osc_bundle, osc_message, parse_osc_message
from .shm import FrameInfo, ShmInputWriter, ShmReader, to_rgba8

__all__ = ["BridgeHTTPError", "DaemonAddress", "FrameInfo", "HttpClient", "OscSender", "ShmInputWriter", "ShmReader",
           "check_channel", "http_path", "osc_address", "osc_bundle", "osc_message", "parse_address",
           "parse_osc_message", "segment_name", "to_rgba8"]
