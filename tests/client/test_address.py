"""``bridge.client.parse_address``: the daemon address as the Krita and Blender plugins take it."""

import pytest

from bridge.client import DaemonAddress, parse_address


@pytest.mark.parametrize("typed, url, host", [
    ("127.0.0.1:9999", "http://127.0.0.1:9999", "127.0.0.1"),
    ("127.0.0.1", "http://127.0.0.1:8787", "127.0.0.1"),
    (" http://localhost ", "http://localhost:8787", "localhost"),
    ("http://localhost/", "http://localhost:8787", "localhost"),
    ("https://gpu.example.org:443", "https://gpu.example.org:443", "gpu.example.org"),
    ("HTTPS://GPU.Example.org", "https://gpu.example.org:8787", "gpu.example.org"),
    ("gpu-box:8000/", "http://gpu-box:8000", "gpu-box"),
    ("10.0.0.5:1", "http://10.0.0.5:1", "10.0.0.5"),
    ("10.0.0.5:65535", "http://10.0.0.5:65535", "10.0.0.5"),
    ("[::1]:8000", "http://[::1]:8000", "::1"),
    ("[::1]", "http://[::1]:8787", "::1"),
    ("https://[2001:DB8::5]/", "https://[2001:db8::5]:8787", "2001:db8::5"),
])
def test_accepted_forms_become_scheme_host_port(typed, url, host):
    assert parse_address(typed) == DaemonAddress(url, host)


@pytest.mark.parametrize("typed", ["localhost", "gpu-box:8000", "[::1]:9", "https://[2001:db8::5]"])
def test_a_normalized_url_parses_to_itself(typed):
    """The Krita docker reconnects with the URL it stored: parsing it again must change nothing."""
    address = parse_address(typed)
    assert parse_address(address.url) == address


@pytest.mark.parametrize("typed, says", [
    ("", "the daemon address is empty; the default is http://127.0.0.1:8787"),
    ("   ", "the daemon address is empty; the default is http://127.0.0.1:8787"),
    ("http://", "no host; expected host:port, e.g. 127.0.0.1:8787"),
    ("http://:8787", "no host; expected host:port, e.g. 127.0.0.1:8787"),
    ("127.0.0.1:port", "the port 'port' is not a number from 1 to 65535"),
    ("127.0.0.1:65536", "the port '65536' is not a number from 1 to 65535"),
    ("127.0.0.1:-1", "the port '-1' is not a number from 1 to 65535"),
    ("127.0.0.1:+80", "the port '+80' is not a number from 1 to 65535"),
    ("127.0.0.1:\uff18\uff10", "the port '\uff18\uff10' is not a number from 1 to 65535"),  # fullwidth 80
    ("127.0.0.1:", "nothing after ':'; give a port from 1 to 65535, or leave out the ':' for 8787"),
    ("127.0.0.1 :8787", "the host '127.0.0.1 ' has a space in it"),
    ("::1", "an IPv6 host goes in brackets, e.g. http://[::1]:8787"),
    ("http://::1:8787", "an IPv6 host goes in brackets, e.g. http://[::1]:8787"),
    ("[::1:8787", "the '[' of an IPv6 host has no closing ']'"),
    ("[gpu-box]:8787", "'gpu-box' in brackets is not an IPv6 address"),
    ("[::1]8787", "expected ':port' after ']', got '8787'"),
])
def test_mistakes_are_refused_with_what_to_type(typed, says):
    with pytest.raises(ValueError) as refused:
        parse_address(typed)
    assert says in str(refused.value)
    if typed.strip():
        assert repr(typed.strip()) in str(refused.value)  # the user sees what was read


@pytest.mark.parametrize("typed, scheme", [("ftp://x:1", "ftp"), ("ws://127.0.0.1:8787", "ws"),
                                           ("FTP://user:secret@x:1", "ftp")])
def test_another_scheme_is_refused_without_echoing_what_may_be_a_password(typed, scheme):
    with pytest.raises(ValueError) as refused:
        parse_address(typed)
    told = str(refused.value)
    assert told == f"the daemon address must start with http:// or https://, not {scheme}://", told


@pytest.mark.parametrize("typed", ["127.0.0.1:0", "http://localhost:0/", "[::1]:00"])
def test_port_zero_is_refused_not_replaced(typed):
    """Port 0 once became 8787 in Krita and stayed 0 in Blender; now both are told."""
    with pytest.raises(ValueError, match="port 0 is no daemon's port .* give 1 to 65535, or leave the port out "
                                         "for 8787"):
        parse_address(typed)


@pytest.mark.parametrize("typed, drop, url", [
    ("http://gpu-box:8787/v1/frame", "/v1/frame", "http://gpu-box:8787"),
    ("127.0.0.1:8787/v1/frame.png?after=3", "/v1/frame.png?after=3", "http://127.0.0.1:8787"),
    ("localhost?x=1", "?x=1", "http://localhost:8787"),
    ("https://[::1]#top", "#top", "https://[::1]:8787"),
])
def test_a_path_is_refused_the_address_is_the_daemons_root(typed, drop, url):
    with pytest.raises(ValueError) as refused:
        parse_address(typed)
    assert f"the address is the daemon's root; drop {drop} and use {url}" in str(refused.value)


@pytest.mark.parametrize("typed", ["http://user:secret@gpu-box:8787", "me@127.0.0.1", "http://@localhost"])
def test_user_info_is_refused_and_not_echoed(typed):
    with pytest.raises(ValueError, match="drop the 'user:password@' part, the daemon has no login") as refused:
        parse_address(typed)
    assert "secret" not in str(refused.value)


@pytest.mark.parametrize("typed, local", [
    ("127.0.0.1", True),
    ("127.0.0.2:9000", True),  # all of 127.0.0.0/8 is loopback
    ("localhost", True),
    ("LocalHost", True),
    ("[::1]", True),
    ("[0:0:0:0:0:0:0:1]", True),
    ("10.0.0.5", False),
    ("192.0.2.1:8787", False),
    ("[2001:db8::5]", False),
    ("gpu-box", False),  # a name other than localhost is not looked up
    ("localhost.example.org", False),
])
def test_is_local_means_a_loopback_address_or_localhost(typed, local):
    assert parse_address(typed).is_local is local


def test_the_address_is_frozen():
    address = parse_address("localhost")
    with pytest.raises(AttributeError):
        address.url = "http://elsewhere:8787"
