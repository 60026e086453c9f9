"""The agent's copy of the tracker's public-address rule (node_agent/addresses.py, core/urlguard.py), which the
relay's gateway (relay/addresses.py) and `luckrig-node pull` use: neither imports the tracker, so this test holds
the two equal, on the tricky forms and on random addresses."""

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from core import urlguard
from node_agent import addresses as agent_addresses
from relay import addresses

TRICKY = [
    "127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "8.8.8.8",
    str(ipaddress.IPv4Address(0)),
    "1.1.1.1", "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "2001:4860:4860::8888",
    "::ffff:127.0.0.1", "::ffff:8.8.8.8", "2002:7f00:1::", "2002:808:808::", "64:ff9b::10.0.0.1",
    "64:ff9b::8.8.8.8", "64:ff9b:1::8.8.8.8", "::8.8.8.8", "ff02::1",
]  # fmt: skip


def test_the_tricky_forms_are_judged_alike():
    for ip in TRICKY:
        assert addresses.is_public_address(ip) == urlguard.is_public_address(ip), ip
    assert not addresses.is_public_address("169.254.169.254") and addresses.is_public_address("8.8.8.8")


@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
def test_random_addresses_are_judged_alike(ip):
    assert addresses.is_public_address(str(ip)) == urlguard.is_public_address(str(ip))


def test_a_url_is_judged_by_its_literal_address_and_a_name_is_left_to_the_resolver():
    assert not addresses.url_allowed("http://127.0.0.1:8787/v1", allow_private=False)
    assert not addresses.url_allowed("http://[::ffff:10.0.0.1]/v1", allow_private=False)
    assert addresses.url_allowed("https://8.8.8.8/v1", allow_private=False)
    assert addresses.url_allowed("https://rig.example.org/v1", allow_private=False)  # PublicOnlyResolver decides
    assert addresses.url_allowed("http://127.0.0.1:8787/v1", allow_private=True)
    assert addresses.is_public_address is agent_addresses.is_public_address  # one copy for the relay and the agent
