"""`firstparty doctor`: will Safari keep the cookies the tracker host sets? (browsers.md, ITP).
And does the tracker see visitors' addresses, or a proxy's?

Safari 14+ caps cookies set by a host that CNAMEs to another domain to 7 days; Safari 16.4+ does
the same when the host's IP differs from the site's in its first half (IPv4: first two octets,
IPv6: upper 64 bits). A same-origin path (`www.example.com/fp/`) is safe from both.

Public suffixes are approximated (last two labels, three under a few known ones like co.uk), not
the full Public Suffix List; CNAME chains need dnspython, else only the final name is seen.

Behind a proxy the tracker must take the visitor's address from X-Forwarded-For
(`[collect] trust_forwarded_for`), else Meta and TikTok get the proxy's. The doctor cannot see
the server's traffic, so it probes: it sends a CORS preflight to the tracker through whatever
sits in front of it, and the tracker answers what it did with that request's X-Forwarded-For
(`X-Firstparty-Forwarded-For: used | ignored`; no header when none arrived). The server also
logs a warning once per process when real traffic brings one it ignores.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import Message
from typing import Literal, Protocol
from urllib.parse import urlsplit

from firstparty import settings as settings_mod
from firstparty.destinations import registry
from firstparty.errors import ConfigError

Level = Literal["ok", "warn", "fail"]
MULTI_LABEL_SUFFIXES = {
    "co.uk", "org.uk", "ac.uk", "gov.uk", "com.au", "net.au", "org.au", "co.nz", "co.jp",
    "ne.jp", "or.jp", "com.br", "com.mx", "co.in", "co.za", "com.cn", "com.tr", "co.kr",
    "com.sg", "com.hk", "com.ar", "co.il", "com.tw",
}  # fmt: skip


@dataclass(frozen=True)
class Finding:
    level: Level
    message: str

    def __str__(self) -> str:
        return f"{self.level.upper():4} {self.message}"


class Resolver(Protocol):
    """DNS as the doctor needs it (real: `SystemResolver`; tests: `StaticResolver`)."""

    def cname_chain(self, host: str) -> list[str]:
        """The CNAME targets from `host`, in order; empty when it has its own A/AAAA records."""
        ...

    def addresses(self, host: str) -> list[str]:
        """The IPv4 and IPv6 addresses `host` finally resolves to."""
        ...


@dataclass
class StaticResolver:
    """Answers from given records, for tests and dry runs."""

    cnames: dict[str, str] = field(default_factory=dict)
    records: dict[str, list[str]] = field(default_factory=dict)

    def cname_chain(self, host: str) -> list[str]:
        chain: list[str] = []
        while host in self.cnames and len(chain) < 16:
            host = self.cnames[host]
            chain.append(host)
        return chain

    def addresses(self, host: str) -> list[str]:
        final = (self.cname_chain(host) or [host])[-1]
        return list(self.records.get(final, []))


class SystemResolver:
    """The machine's resolver: getaddrinfo for addresses, dnspython (if installed) for CNAMEs."""

    def cname_chain(self, host: str) -> list[str]:
        try:
            import dns.exception
            import dns.resolver
        except ImportError:
            canonical = socket.getaddrinfo(host, None, flags=socket.AI_CANONNAME)[0][3]
            return [canonical] if canonical and _norm(canonical) != _norm(host) else []
        chain: list[str] = []
        while len(chain) < 16:
            try:
                answer = dns.resolver.resolve(host, "CNAME")
            except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                return chain
            except dns.exception.DNSException as exc:
                raise OSError(f"DNS lookup of {host} failed: {exc}") from None
            host = _norm(str(answer[0].target))
            chain.append(host)
        return chain

    def addresses(self, host: str) -> list[str]:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        return sorted({str(info[4][0]) for info in infos})


class Prober(Protocol):
    """The tracker over HTTP as the doctor needs it (real: `HttpProber`; tests: any)."""

    def forwarded_for(self, tracker: str) -> str | None:
        """The tracker's `X-Firstparty-Forwarded-For` answer to a preflight; OSError if down."""
        ...


class HttpProber:
    """A CORS preflight to `<tracker>/v1/events`, through the proxy in front if there is one."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout

    def forwarded_for(self, tracker: str) -> str | None:
        url = tracker.rstrip("/") + "/v1/events"
        request = urllib.request.Request(url, method="OPTIONS")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return _forwarded(answer.headers)
        except urllib.error.HTTPError as refused:  # a 4xx preflight still carries the header
            return _forwarded(refused.headers)
        # URLError and timeouts are OSErrors already: the caller reports the tracker as down.


def _forwarded(headers: Message) -> str | None:
    seen: str | None = headers.get("x-firstparty-forwarded-for")
    return seen


def _proxy(tracker: str, prober: Prober) -> list[Finding]:
    try:
        seen = prober.forwarded_for(tracker)
    except OSError as exc:
        return [Finding("warn", f"cannot probe {tracker} for a proxy: {exc}")]
    if seen == "ignored":
        return [
            Finding(
                "warn",
                f"a proxy in front of {tracker} sends X-Forwarded-For but trust_forwarded_for is "
                "off: Meta and TikTok get the proxy's IP address as the visitor's; set "
                "[collect] trust_forwarded_for = true",
            )
        ]
    if seen == "used":
        return [Finding("ok", f"{tracker} takes the visitor's address from X-Forwarded-For")]
    return [Finding("ok", f"no X-Forwarded-For reaches {tracker}: it sees visitors directly")]


def _norm(host: str) -> str:
    return host.lower().rstrip(".")


def registrable_domain(host: str) -> str:
    """example.com for www.example.com (approximate: see the module docstring)."""
    labels = _norm(host).split(".")
    size = 3 if ".".join(labels[-2:]) in MULTI_LABEL_SUFFIXES else 2
    return ".".join(labels[-size:])


def first_half(address: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The network Safari compares: /16 for IPv4, /64 for IPv6."""
    ip = ipaddress.ip_address(address)
    return ipaddress.ip_network(f"{ip}/{16 if ip.version == 4 else 64}", strict=False)


def check(
    site: str, tracker: str, resolver: Resolver, prober: Prober | None = None
) -> list[Finding]:
    """Every finding about this deployment, worst first (the proxy probe only with `prober`)."""
    site_host, tracker_host = urlsplit(site).hostname, urlsplit(tracker).hostname
    if not site_host or not tracker_host:
        return [Finding("fail", "give both as URLs, e.g. https://www.example.com")]
    findings = _scheme(tracker)
    if site_host == tracker_host:
        findings.append(Finding("ok", f"same-origin deployment on {site_host}: no CNAME/IP cap"))
    elif registrable_domain(site_host) != registrable_domain(tracker_host):
        domain = registrable_domain(site_host)
        findings.append(
            Finding("fail", f"{tracker_host} is not on {domain}: its cookies are third-party")
        )
    else:
        findings += _cnames(site_host, tracker_host, resolver)
        findings += _addresses(site_host, tracker_host, resolver)
    if prober is not None:
        findings += _proxy(tracker, prober)
    order: dict[Level, int] = {"fail": 0, "warn": 1, "ok": 2}
    return sorted(findings, key=lambda f: order[f.level])


def _scheme(tracker: str) -> list[Finding]:
    if urlsplit(tracker).scheme == "https":
        return []
    return [Finding("warn", "the tracker is not on https: browsers refuse its Secure cookies")]


def _cnames(site_host: str, tracker_host: str, resolver: Resolver) -> list[Finding]:
    try:
        chain = resolver.cname_chain(tracker_host)
    except OSError as exc:
        return [Finding("fail", f"cannot resolve {tracker_host}: {exc}")]
    site_domain = registrable_domain(site_host)
    foreign = [name for name in chain if registrable_domain(name) != site_domain]
    if foreign:
        return [
            Finding(
                "warn",
                f"{tracker_host} is a CNAME to {foreign[0]} (another domain): Safari caps the "
                "cookies it sets to 7 days; give it A/AAAA records instead",
            )
        ]
    via = f" (CNAME {' -> '.join(chain)})" if chain else ""
    return [Finding("ok", f"{tracker_host} stays on {site_domain}{via}")]


def _addresses(site_host: str, tracker_host: str, resolver: Resolver) -> list[Finding]:
    resolved: dict[str, list[str]] = {}
    for host in (site_host, tracker_host):
        try:
            resolved[host] = resolver.addresses(host)
        except OSError as exc:
            return [Finding("fail", f"cannot resolve {host}: {exc}")]
        if not resolved[host]:
            return [Finding("fail", f"{host} has no A/AAAA records")]
    site_ips = resolved[site_host]
    site_nets = {first_half(ip) for ip in site_ips}
    strangers = [ip for ip in resolved[tracker_host] if first_half(ip) not in site_nets]
    if strangers:
        return [
            Finding(
                "warn",
                f"{tracker_host} ({', '.join(strangers)}) is not in the first half of "
                f"{site_host}'s addresses ({', '.join(site_ips)}): Safari 16.4+ caps its cookies "
                "to 7 days; host it behind the site's CDN or load balancer, or use a same-origin "
                "path",
            )
        ]
    return [Finding("ok", f"{tracker_host} shares the first half of {site_host}'s addresses")]


def test_modes(config_path: str | None) -> list[Finding]:
    """A warning per destination left in its platform's test mode: nothing it sends counts."""
    try:
        settings = settings_mod.load(config_path=config_path)
    except ConfigError as exc:
        return [Finding("warn", f"cannot read the config to check the destinations: {exc}")]
    adapters = registry.adapters(settings.destinations)
    unset = [
        Finding(
            "fail",
            f"destination {name} cannot send: environment variable(s) not set: "
            f"{', '.join(names)} (its events wait, pending, until the server has them)",
        )
        for name, names in sorted(settings.misconfigured.items())
    ]
    testing = [(name, a) for name, a in sorted(adapters.items()) if a.test_mode]
    found = [
        Finding(
            "warn",
            f"destination {name} ({adapter.type}) is in test mode ({adapter.test_mode}): "
            "its sends are recorded `test` and the platform counts no conversion",
        )
        for name, adapter in testing
    ]
    if adapters and not testing:
        found.append(Finding("ok", f"{len(adapters)} destination(s), none in test mode"))
    return unset + found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The doctor's options, for `firstparty doctor` in cli.py and for `main`."""
    parser.add_argument("--site", required=True, help="the website, e.g. https://www.example.com")
    parser.add_argument("--tracker", required=True, help="the tracker, e.g. https://t.example.com")


def run(
    args: argparse.Namespace, resolver: Resolver | None = None, prober: Prober | None = None
) -> int:
    """Print the findings; 0 when all are OK, else 1."""
    findings = check(args.site, args.tracker, resolver or SystemResolver(), prober or HttpProber())
    findings += test_modes(getattr(args, "config", None))
    for finding in findings:
        print(finding)
    return 0 if all(f.level == "ok" for f in findings) else 1


def main(
    argv: Sequence[str] | None = None,
    resolver: Resolver | None = None,
    prober: Prober | None = None,
) -> int:
    """`firstparty doctor --site URL --tracker URL` on its own."""
    parser = argparse.ArgumentParser(
        prog="firstparty doctor",
        description="Check the tracker host against Safari's ITP rules and for a proxy.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv), resolver, prober)
