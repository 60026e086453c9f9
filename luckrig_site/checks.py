"""Settings that would quietly weaken the tracker's defences stop it instead.

A malformed `RATE_*` value used to switch that limit off without a word (django-ratelimit reads `5 per day`
as no limit), and a `TRUSTED_PROXIES` that covers every address lets any client choose its IP by sending
X-Forwarded-For, which empties every per-IP limit, quota and ban. Both are refused twice: by the ASGI/WSGI
entry points before the first request (`refuse_bad_settings`), and by a system check, so that `manage.py check
--deploy` and every management command that runs checks (migrate, monitor, ...) say so too."""

import ipaddress
import os

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

from core.ratelimits import period_of

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_ALL = {4: ipaddress.IPv4Network("0.0.0.0/0"), 6: ipaddress.IPv6Network("::/0")}


def rate_problems() -> list[str]:
    """Every RATE_* setting must be a rate django-ratelimit reads as it is meant: N/s, N/m, N/h, N/d, N/10m."""
    problems = []
    for name in sorted(n for n in dir(settings) if n.startswith("RATE_")):
        try:
            period_of(getattr(settings, name))
        except ValueError as exc:
            problems.append(f"{name}: {exc}. A limit that cannot be read would be no limit at all.")
    return problems


def _as_ipv4(net: ipaddress.IPv6Network) -> ipaddress.IPv4Network:
    """::ffff:10.0.0.0/104 is 10.0.0.0/8: the client IP code reads mapped addresses as IPv4."""
    return ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))


def proxy_problems() -> list[str]:
    """TRUSTED_PROXIES: each entry an address or network, and together not every address of a family."""
    problems, nets = [], {4: [], 6: []}
    for item in settings.TRUSTED_PROXIES:
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            problems.append(f"TRUSTED_PROXIES: {item!r} is not an IP address or network (like 10.0.0.5 or 10.0.0.0/8).")
            continue
        if net.version == 6 and net.subnet_of(_MAPPED):
            net = _as_ipv4(net)
        nets[net.version].append(net)
    for version, whole in _ALL.items():
        if list(ipaddress.collapse_addresses(nets[version])) == [whole]:
            problems.append(
                f"TRUSTED_PROXIES trusts every IPv{version} address ({whole}, or networks that add up to it): "
                "any client could then choose its own IP with X-Forwarded-For and escape every per-IP limit, "
                "quota and ban. List only your reverse proxies' addresses."
            )
    return problems


def fallback_problems() -> list[str]:
    if settings.RATELIMIT_FALLBACK_PROCESSES < 1:
        return ["RATELIMIT_FALLBACK_PROCESSES must be 1 or more (the number of tracker processes)."]
    return []


TIER_LIMITS = (
    "LIMITED_MAX_REQUESTS",
    "LIMITED_MAX_OUTPUT_TOKENS",
    "LIMITED_TOKENS_PER_DAY",
    "CONTRIBUTOR_MAX_REQUESTS",
    "CONTRIBUTOR_MAX_OUTPUT_TOKENS",
    "CONTRIBUTOR_TOKENS_PER_DAY",
)


def tier_problems() -> list[str]:
    """A tier limit of 0 or less would refuse every taster (or share a budget among no requests)."""
    return [
        f"{name} must be 1 or more (it is {getattr(settings, name)!r}); tracker/tiers.py says what it limits."
        for name in TIER_LIMITS
        if not isinstance(getattr(settings, name), int) or getattr(settings, name) < 1
    ]


# Old environment name -> the name that replaced it. The per-request output cap was *_OUTPUT_TOKENS_PER_REQUEST for a
# while (and *_MAX_OUTPUT_TOKENS then meant the whole budget, derived, its variable ignored); it is
# *_MAX_OUTPUT_TOKENS again, the name docs/api.md and .env.example give. The old name is not read (one name per
# setting), but a deployment that still sets it is told so instead of silently getting the default.
RENAMED_ENV = {
    "LIMITED_OUTPUT_TOKENS_PER_REQUEST": "LIMITED_MAX_OUTPUT_TOKENS",
    "CONTRIBUTOR_OUTPUT_TOKENS_PER_REQUEST": "CONTRIBUTOR_MAX_OUTPUT_TOKENS",
}


def renamed_env_warnings(environ=None) -> list[str]:
    """A sentence for each renamed environment variable that is still set."""
    environ = os.environ if environ is None else environ
    return [
        f"{old} is set but no longer read: the per-request output cap is {new} (now {getattr(settings, new)!r}). "
        f"Rename the variable."
        for old, new in RENAMED_ENV.items()
        if environ.get(old, "") != ""
    ]


def settings_problems() -> list[tuple[str, str]]:
    """(check id, sentence) for each setting the tracker must not start with."""
    return (
        [("luckrig.E010", p) for p in rate_problems()]
        + [("luckrig.E011", p) for p in proxy_problems()]
        + [("luckrig.E012", p) for p in fallback_problems()]
        + [("luckrig.E013", p) for p in tier_problems()]
    )


@register(Tags.security)
def limits_and_proxies(app_configs, **kwargs):
    return [Error(sentence, id=check_id) for check_id, sentence in settings_problems()]


@register()
def renamed_settings(app_configs, **kwargs):
    return [Warning(sentence, id="luckrig.W014") for sentence in renamed_env_warnings()]


def refuse_bad_settings() -> None:
    """Called by the ASGI and WSGI entry points: the process stops before serving anything."""
    problems = settings_problems()
    if problems:
        lines = "\n".join(f"  {check_id}: {sentence}" for check_id, sentence in problems)
        raise ImproperlyConfigured(f"LuckRig refuses to start with these settings:\n{lines}")
