"""`firstparty doctor` against given DNS answers: the CNAME and the Safari 16.4 IP rules."""

from __future__ import annotations

import pytest

from firstparty import doctor

SITE = "https://www.example.com"
TRACKER = "https://t.example.com"


def _levels(findings: list[doctor.Finding]) -> list[str]:
    return [f.level for f in findings]


def test_same_first_half_ipv4_is_ok() -> None:
    dns = doctor.StaticResolver(
        records={"www.example.com": ["203.52.1.2"], "t.example.com": ["203.52.56.22"]}
    )
    findings = doctor.check(SITE, TRACKER, dns)
    assert _levels(findings) == ["ok", "ok"]


def test_different_first_half_ipv4_warns() -> None:
    dns = doctor.StaticResolver(
        records={"www.example.com": ["203.52.1.2"], "t.example.com": ["201.55.1.2"]}
    )
    (warning,) = [f for f in doctor.check(SITE, TRACKER, dns) if f.level == "warn"]
    assert "201.55.1.2" in warning.message and "7 days" in warning.message


def test_ipv6_compares_the_upper_64_bits() -> None:
    site = ["2001:db8:1:2::10", "203.52.1.2"]
    near = doctor.StaticResolver(
        records={"www.example.com": site, "t.example.com": ["2001:db8:1:2:ffff::1"]}
    )
    far = doctor.StaticResolver(
        records={"www.example.com": site, "t.example.com": ["2001:db8:1:3::1"]}
    )
    assert _levels(doctor.check(SITE, TRACKER, near)) == ["ok", "ok"]
    assert "warn" in _levels(doctor.check(SITE, TRACKER, far))


def test_an_ipv6_tracker_needs_ipv6_on_the_site() -> None:
    dns = doctor.StaticResolver(
        records={"www.example.com": ["203.52.1.2"], "t.example.com": ["203.52.9.9", "2001:db8::1"]}
    )
    assert "warn" in _levels(doctor.check(SITE, TRACKER, dns))


def test_cname_to_another_domain_warns() -> None:
    dns = doctor.StaticResolver(
        cnames={"t.example.com": "customer-42.tracker-vendor.net"},
        records={
            "www.example.com": ["203.52.1.2"],
            "customer-42.tracker-vendor.net": ["203.52.7.7"],
        },
    )
    findings = doctor.check(SITE, TRACKER, dns)
    assert findings[0].level == "warn"
    assert "tracker-vendor.net" in findings[0].message


def test_cname_chain_is_checked_at_every_step() -> None:
    dns = doctor.StaticResolver(
        cnames={"t.example.com": "edge.cdn-vendor.net", "edge.cdn-vendor.net": "lb.example.com"},
        records={"www.example.com": ["203.52.1.2"], "lb.example.com": ["203.52.1.3"]},
    )
    assert "cdn-vendor.net" in doctor.check(SITE, TRACKER, dns)[0].message


def test_cname_within_the_site_domain_is_ok() -> None:
    dns = doctor.StaticResolver(
        cnames={"t.example.com": "lb.example.com"},
        records={"www.example.com": ["203.52.1.2"], "lb.example.com": ["203.52.1.3"]},
    )
    assert _levels(doctor.check(SITE, TRACKER, dns)) == ["ok", "ok"]


def test_same_origin_path_deployment_needs_no_dns() -> None:
    findings = doctor.check(SITE, "https://www.example.com/fp/", doctor.StaticResolver())
    assert _levels(findings) == ["ok"]
    assert "same-origin" in findings[0].message


def test_another_registrable_domain_fails() -> None:
    findings = doctor.check(SITE, "https://t.example.net", doctor.StaticResolver())
    assert _levels(findings) == ["fail"]


def test_unresolvable_host_fails() -> None:
    dns = doctor.StaticResolver(records={"www.example.com": ["203.52.1.2"]})
    assert "fail" in _levels(doctor.check(SITE, TRACKER, dns))


def test_plain_http_tracker_warns() -> None:
    dns = doctor.StaticResolver(
        records={"www.example.com": ["203.52.1.2"], "t.example.com": ["203.52.1.3"]}
    )
    assert _levels(doctor.check(SITE, "http://t.example.com", dns))[0] == "warn"


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        ("www.example.com", "example.com"),
        ("T.Example.COM.", "example.com"),
        ("shop.example.co.uk", "example.co.uk"),
        ("example.com", "example.com"),
    ],
)
def test_registrable_domain(host: str, domain: str) -> None:
    assert doctor.registrable_domain(host) == domain


def test_main_prints_findings_and_exits_non_zero_on_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    dns = doctor.StaticResolver(
        records={"www.example.com": ["203.52.1.2"], "t.example.com": ["201.55.1.2"]}
    )
    direct = StaticProber(None)
    assert doctor.main(["--site", SITE, "--tracker", TRACKER], resolver=dns, prober=direct) == 1
    out = capsys.readouterr().out
    assert out.startswith("WARN ")
    good = doctor.StaticResolver(
        records={"www.example.com": ["203.52.1.2"], "t.example.com": ["203.52.56.22"]}
    )
    assert doctor.main(["--site", SITE, "--tracker", TRACKER], resolver=good, prober=direct) == 0
    behind = StaticProber("ignored")
    assert doctor.main(["--site", SITE, "--tracker", TRACKER], resolver=good, prober=behind) == 1
    assert "trust_forwarded_for" in capsys.readouterr().out


class StaticProber:
    """The tracker's answer to the proxy probe, given."""

    def __init__(self, seen: str | None) -> None:
        self.seen = seen

    def forwarded_for(self, tracker: str) -> str | None:
        return self.seen
