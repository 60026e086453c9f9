"""Per-IP means per household (issue 11): an IPv6 address counts by its /64 (one home connection gets a whole
/64, so eight addresses of it are one person), and an IPv4-mapped IPv6 address as the IPv4 address it maps.
Every per-IP limit, quota, ban and anonymous identity goes through the one keyed hash of the client's address."""

import jwt
import pytest
from django.core.management import call_command

from core import clientip
from core.clientip import hash_ip
from tracker.models import TastingToken

pytestmark = pytest.mark.django_db

ONE_HOME = [f"2001:db8:7:42::{i:x}" for i in range(1, 9)]  # eight addresses of one /64
ONE_HOME[-1] = "2001:db8:7:42:ffff:ffff:ffff:fffe"  # the far end of the same /64


def test_eight_addresses_of_one_ipv6_64_create_at_most_five_contributors_a_day(api, settings):
    settings.RATE_CONTRIBUTOR_CREATE = "5/d"
    codes = [api.post("/api/contributors", {}, REMOTE_ADDR=ip)[0] for ip in ONE_HOME]
    assert codes == [201] * 5 + [429] * 3
    # The next /64 is another household with its own budget.
    assert api.post("/api/contributors", {}, REMOTE_ADDR="2001:db8:7:43::1")[0] == 201


def test_an_ip_ban_given_for_one_address_of_a_64_holds_for_the_whole_64(api, live_node):
    node, _ = live_node
    call_command("ban", "ip", "2001:db8:7:42::1", "--reason", "scraping from a home connection")
    status, body = api.post("/api/tokens", {"node_id": node.pk}, REMOTE_ADDR="2001:db8:7:42:dead:beef:0:1")
    assert status == 403 and body["code"] == "banned"
    assert api.post("/api/contributors", {}, REMOTE_ADDR="2001:db8:7:42::99")[1]["code"] == "banned"
    # Another /64 is not banned.
    assert api.post("/api/tokens", {"node_id": node.pk}, REMOTE_ADDR="2001:db8:7:43::1")[0] == 201


def test_an_ipv4_mapped_address_counts_as_the_ipv4_address_it_maps(api, live_node, settings):
    node, _ = live_node
    settings.RATE_CONTRIBUTOR_CREATE = "2/d"
    assert api.post("/api/contributors", {}, REMOTE_ADDR="198.51.100.7")[0] == 201
    assert api.post("/api/contributors", {}, REMOTE_ADDR="::ffff:198.51.100.7")[0] == 201
    assert api.post("/api/contributors", {}, REMOTE_ADDR="198.51.100.7")[0] == 429

    call_command("ban", "ip", "::ffff:198.51.100.7", "--reason", "the same address, written as IPv6")
    assert api.post("/api/tokens", {"node_id": node.pk}, REMOTE_ADDR="198.51.100.7")[1]["code"] == "banned"
    call_command("unban", "ip", "198.51.100.7", "--reason", "lifted under its IPv4 name")
    assert api.post("/api/tokens", {"node_id": node.pk}, REMOTE_ADDR="::ffff:198.51.100.7")[0] == 201


def test_the_daily_anonymous_quota_and_the_anon_subject_are_per_household(api, live_node, settings):
    node, _ = live_node
    settings.LIMITED_TOKENS_PER_DAY = 2
    settings.RATE_TOKEN_CREATE = "1000/m"
    issued = [api.post("/api/tokens", {"node_id": node.pk}, REMOTE_ADDR=ip) for ip in ONE_HOME[:3]]
    assert [status for status, _ in issued] == [201, 201, 429]
    assert issued[-1][1]["code"] == "quota_exceeded"
    subjects = {jwt.decode(body["token"], options={"verify_signature": False})["sub"] for _, body in issued[:2]}
    assert len(subjects) == 1 and subjects.pop().startswith("anon:")
    assert TastingToken.objects.values("ip_hash").distinct().count() == 1


def test_forwarded_ipv6_clients_behind_a_trusted_proxy_count_by_their_64(api, settings):
    settings.RATE_CONTRIBUTOR_CREATE = "1/d"
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    hop = {"REMOTE_ADDR": "10.0.0.5"}
    assert api.post("/api/contributors", {}, HTTP_X_FORWARDED_FOR="2001:db8:9:1::1", **hop)[0] == 201
    assert api.post("/api/contributors", {}, HTTP_X_FORWARDED_FOR="2001:db8:9:1::2", **hop)[0] == 429
    # A proxy that reaches Django as an IPv4-mapped peer is still the trusted proxy: its clients are told apart.
    mapped = {"REMOTE_ADDR": "::ffff:10.0.0.5"}
    assert api.post("/api/contributors", {}, HTTP_X_FORWARDED_FOR="192.0.2.9", **mapped)[0] == 201
    assert api.post("/api/contributors", {}, HTTP_X_FORWARDED_FOR="192.0.2.10", **mapped)[0] == 201


@pytest.mark.parametrize(
    "address, expected",
    [
        ("198.51.100.7", "198.51.100.7"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("2001:db8:7:42::1", "2001:db8:7:42::/64"),
        ("2001:DB8:7:42:FFFF::1", "2001:db8:7:42::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        # 6to4 and Teredo embed the subscriber's IPv4 address: a 6to4 site has a whole /48, and Teredo puts
        # every client of one server in one /64, so the IPv4 address is the household.
        ("2002:c633:6407:1::1", "198.51.100.7"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45"),
        ("not an address", "not an address"),
    ],
)
def test_household_of_an_address(address, expected):
    assert clientip.household(address) == expected


def test_ipv4_hashes_are_unchanged_so_existing_bans_and_quotas_still_hold(settings):
    import hashlib
    import hmac

    expected = hmac.new(settings.SECRET_KEY.encode(), b"203.0.113.7", hashlib.sha256).hexdigest()
    assert hash_ip("203.0.113.7") == expected == hash_ip("::ffff:203.0.113.7")
