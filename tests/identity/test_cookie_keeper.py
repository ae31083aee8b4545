"""The cookie keeper re-sets platform cookies with their values; `_fbc` only for a new fbclid."""

from __future__ import annotations

from datetime import UTC, datetime

from firstparty.identity import cookie_keeper
from firstparty.settings import CookieSettings

NOW = datetime(2026, 11, 26, 9, 31, 13, 250000, tzinfo=UTC)
NOW_MS = 1795685473250
ON = CookieSettings(domain="example.com", keeper=True)
FBP = "fb.1.1700000000000.1234567890"
GA = "GA1.1.123456789.1700000000"


def _headers(
    settings: CookieSettings = ON,
    *,
    context: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
    fbclid: str | None = None,
) -> list[str]:
    return cookie_keeper.headers(
        settings, context=context or {}, request_cookies=cookies or {}, new_fbclid=fbclid, now=NOW
    )


def _by_name(values: list[str]) -> dict[str, str]:
    return {v.split("=", 1)[0]: v for v in values}


def test_off_unless_enabled_with_a_domain() -> None:
    cookies = {"_fbp": FBP}
    assert _headers(CookieSettings(domain="example.com"), cookies=cookies) == []
    assert _headers(CookieSettings(keeper=True), cookies=cookies) == []


def test_resets_each_platform_cookie_with_its_value_and_a_long_max_age() -> None:
    cookies = {
        "_fbp": FBP,
        "_ttp": "2Xl5N6i5hJ8cYk1XeM1Q2Z3r4sT",
        "_ga": GA,
        "_gcl_aw": "GCL.1700000000.Cj0KCQiA-abc_123",
    }
    out = _by_name(_headers(cookies=cookies))
    assert set(out) == {"_fbp", "_ttp", "_ga", "_gcl_aw"}
    assert out["_fbp"] == (
        f"_fbp={FBP}; Max-Age=34560000; Domain=example.com; Path=/; SameSite=Lax; Secure"
    )
    for name, value in cookies.items():
        assert out[name].startswith(f"{name}={value}; ")
        assert "HttpOnly" not in out[name]  # the pixels must still read them


def test_context_is_used_when_the_browser_did_not_send_the_cookie() -> None:
    out = _by_name(_headers(context={"fbp": FBP, "ga": GA}, cookies={"_ga": "GA1.2.9.9"}))
    assert out["_fbp"].startswith(f"_fbp={FBP};")
    assert out["_ga"].startswith("_ga=GA1.2.9.9;")  # the request's own cookie wins


def test_values_that_do_not_look_like_the_platforms_are_not_echoed() -> None:
    hostile = {
        "_fbp": "fb.1.1700000000000.1; Domain=evil.com",
        "_ga": "GA1.1.1\r\nSet-Cookie: x=1",
        "_ttp": "short",
        "_gcl_aw": "not-a-gcl",
    }
    assert _headers(cookies=hostile) == []


def test_max_age_and_secure_follow_the_settings() -> None:
    settings = CookieSettings(domain="example.test", keeper=True, max_age_days=180, secure=False)
    (value,) = _headers(settings, cookies={"_fbp": FBP})
    assert value == f"_fbp={FBP}; Max-Age=15552000; Domain=example.test; Path=/; SameSite=Lax"


def test_fbc_is_not_rewritten_without_a_new_fbclid() -> None:
    existing = "fb.1.1700000000000.IwAR0old"
    assert "_fbc" not in _by_name(_headers(cookies={"_fbc": existing}))
    assert "_fbc" not in _by_name(_headers(cookies={"_fbc": existing}, fbclid="IwAR0old"))
    assert "_fbc" not in _by_name(_headers(context={"fbc": existing}, fbclid="IwAR0old"))


def test_fbc_is_written_for_a_new_fbclid_with_the_time_it_arrived() -> None:
    out = _by_name(_headers(fbclid="IwAR0new-_x"))
    assert out["_fbc"].startswith(f"_fbc=fb.1.{NOW_MS}.IwAR0new-_x; Max-Age=")
    replaced = _by_name(_headers(cookies={"_fbc": "fb.1.1700000000000.IwAR0old"}, fbclid="IwAR1"))
    assert replaced["_fbc"].startswith(f"_fbc=fb.1.{NOW_MS}.IwAR1;")


def test_fbc_subdomain_index_follows_the_cookie_domain() -> None:
    assert cookie_keeper.fbc_value("abc", None, NOW) == f"fb.1.{NOW_MS}.abc"
    assert cookie_keeper.fbc_value("abc", None, NOW, subdomain_index=2) == f"fb.2.{NOW_MS}.abc"
    settings = CookieSettings(domain="shop.example.co.uk", keeper=True)
    assert _headers(settings, fbclid="abc")[0].startswith(f"_fbc=fb.3.{NOW_MS}.abc;")


def test_a_malformed_fbclid_is_ignored() -> None:
    assert _headers(fbclid="abc;def") == []
    assert _headers(fbclid="") == []


def test_a_parameter_builder_fbc_for_the_same_click_is_kept_byte_exact() -> None:
    builder = "fb.1.1700000000000.IwAR0same.AQIDAQEC"  # Meta's Parameter Builder appendix
    assert cookie_keeper.fbc_value("IwAR0same", builder, NOW) is None
    assert cookie_keeper.fbc_value("IwAR0new", builder, NOW) == f"fb.1.{NOW_MS}.IwAR0new"


def test_fbp_is_re_set_byte_exact_and_never_minted() -> None:
    builder = "fb.1.1700000000000.1234567890.Ag"
    out = _by_name(_headers(cookies={"_fbp": builder}, fbclid="IwAR0new"))
    assert out["_fbp"].startswith(f"_fbp={builder};")
    assert "_fbp" not in _by_name(_headers(fbclid="IwAR0new"))  # none yet: the pixel's to set
