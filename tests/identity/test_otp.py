"""Phone verification through the real app and a fake Twilio: answers, limits, stored forms."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest
import sqlalchemy as sa

from firstparty.identity import cookie
from firstparty.store.models import metadata, otp_codes, users, visitor_users, visitors
from tests.fakes import twilio as fake_twilio
from tests.identity.conftest import otp_app

PHONE = "+1 617 555 0100"
E164 = "+16175550100"
OTHER = "+16505551212"


async def test_start_then_verify_links_the_visitor(
    database_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with otp_app(database_url, twilio) as app:
        laptop = app.device()
        started = await app.start(laptop, PHONE)
        assert started.status_code == 202
        assert started.json() == {"ok": True, "expires_in": 600, "resend_after": 0}
        assert twilio.sms[0].to == E164
        code = twilio.last_code(E164)
        assert len(code) == 6

        answer = await app.verify(laptop, PHONE, code)

        assert answer.status_code == 200
        user_id = answer.json()["user_id"]
        assert answer.json() == {"ok": True, "user_id": user_id}
        secret = app.settings.secret_key.get_secret_value()
        visitor_id = cookie.read(secret, answer.cookies[app.settings.cookie.name])
        assert visitor_id is not None
        [visitor] = app.rows(visitors)
        assert (visitor["id"], visitor["user_id"]) == (visitor_id, user_id)
        [code_row] = app.rows(otp_codes)
        assert code_row["used_at"] is not None and code_row["code_hash"] not in (None, code)
        [user] = app.rows(users)
        assert (
            user["id"] == user_id
            and user["phone_key"]
            and set(user["phone_hashes"])
            == {
                "ph",
                "ph_e164",
            }
        )


async def test_the_same_phone_gives_the_same_user_on_every_device(
    database_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with otp_app(database_url, twilio) as app:
        laptop, phone = app.device("198.51.100.7"), app.device("203.0.113.9")
        first = await app.login(laptop, "+1 617 555 0100", E164)
        app.clock.advance(86400 * 3)
        second = await app.login(phone, "(617) 555-0100", E164)

        assert first == second
        linked = {r["id"]: r["user_id"] for r in app.rows(visitors)}
        assert len(linked) == 2 and set(linked.values()) == {first}
        assert len(app.rows(users)) == 1


async def test_start_answers_the_same_for_known_and_unknown_numbers(
    sqlite_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with otp_app(sqlite_url, twilio) as app:
        device = app.device()
        await app.login(device, PHONE, E164)
        app.clock.advance(60)
        known = await app.start(device, PHONE)
        unknown = await app.start(device, OTHER)

        assert (known.status_code, known.json()) == (unknown.status_code, unknown.json())
        assert known.json()["ok"] is True


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b'{"phone": "12"}', 422, "phone"),
        (b'{"phone": "not a number"}', 422, "phone"),
        (b'{"phone": "+1 900 555 0100"}', 422, "phone"),  # premium rate
        (b'{"phone": "+1 800 555 0100"}', 422, "phone"),  # toll free
        (b'{"phone": 16175550100}', 422, "phone"),
        (b"{}", 422, "phone"),
        (b'{"phone": ', 400, None),
        (b"[1, 2]", 422, "body"),
    ],
)
async def test_bad_start_input_names_the_field(
    sqlite_url: str, twilio: fake_twilio.FakeTwilio, body: bytes, status: int, field: str | None
) -> None:
    async with otp_app(sqlite_url, twilio) as app:
        answer = await app.device().post(
            "/v1/otp/start", content=body, headers={"content-type": "application/json"}
        )

        assert answer.status_code == status
        if field:
            assert [d["field"] for d in answer.json()["details"]] == [field]
        assert twilio.sms == []


async def test_bad_verify_input_names_the_field(
    sqlite_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with otp_app(sqlite_url, twilio) as app:
        device = app.device()
        missing = await device.post("/v1/otp/verify", json={"phone": PHONE})
        letters = await app.verify(device, PHONE, "abcdef")

        assert missing.status_code == 422 and missing.json()["details"][0]["field"] == "code"
        assert letters.status_code == 422 and letters.json()["details"][0]["field"] == "code"


async def test_countries_outside_the_allow_list_are_refused(
    sqlite_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with otp_app(sqlite_url, twilio, allowed_countries=["us"]) as app:
        answer = await app.start(app.device(), "+33 6 12 34 56 78")

        assert answer.status_code == 422
        assert answer.json()["details"][0]["field"] == "phone"
        assert twilio.sms == []


async def test_wrong_codes_until_the_code_is_dead(
    database_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with otp_app(database_url, twilio, max_attempts=3) as app:
        device = app.device()
        await app.start(device, PHONE)
        right = twilio.last_code(E164)
        wrong = "000000" if right != "000000" else "111111"

        answers = [await app.verify(device, PHONE, wrong) for _ in range(3)]
        late = await app.verify(device, PHONE, right)

        assert [a.status_code for a in answers] == [422, 422, 422]
        messages = [a.json()["details"][0]["message"] for a in answers]
        assert [re.search(r"(\d) attempts? left", m).group(1) for m in messages] == ["2", "1", "0"]  # type: ignore[union-attr]
        assert late.status_code == 429 and "Retry-After" in late.headers
        assert app.rows(visitors) == []


async def test_an_expired_code_is_gone(sqlite_url: str, twilio: fake_twilio.FakeTwilio) -> None:
    async with otp_app(sqlite_url, twilio, ttl_seconds=300) as app:
        device = app.device()
        await app.start(device, PHONE)
        app.clock.advance(301)

        answer = await app.verify(device, PHONE, twilio.last_code(E164))

        assert answer.status_code == 410
        assert answer.json()["details"][0]["field"] == "code"


async def test_a_code_works_once(sqlite_url: str, twilio: fake_twilio.FakeTwilio) -> None:
    async with otp_app(sqlite_url, twilio) as app:
        device = app.device()
        await app.start(device, PHONE)
        code = twilio.last_code(E164)

        first = await app.verify(device, PHONE, code)
        again = await app.verify(app.device("203.0.113.50"), PHONE, code)

        assert first.status_code == 200
        assert again.status_code == 410


async def test_a_code_checked_twice_at_once_verifies_once(
    database_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with otp_app(database_url, twilio) as app:
        await app.start(app.device(), PHONE)
        code = twilio.last_code(E164)

        answers = await asyncio.gather(
            *(app.verify(app.device(f"203.0.113.{i}"), PHONE, code) for i in range(4))
        )

        assert sorted(a.status_code for a in answers) == [200, 410, 410, 410]
        assert len(app.rows(visitors)) == 1


async def test_a_new_code_invalidates_the_previous_one(
    sqlite_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with otp_app(sqlite_url, twilio) as app:
        device = app.device()
        await app.start(device, PHONE)
        old = twilio.last_code(E164)
        app.clock.advance(1)
        await app.start(device, PHONE)
        new = twilio.last_code(E164)

        stale = await app.verify(device, PHONE, old) if old != new else None
        fresh = await app.verify(device, PHONE, new)

        assert stale is None or stale.status_code == 422
        assert fresh.status_code == 200


async def test_resends_wait_longer_each_time(
    sqlite_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with otp_app(sqlite_url, twilio, resend_interval_seconds=30) as app:
        device = app.device()
        assert (await app.start(device, PHONE)).json()["resend_after"] == 30
        too_soon = await app.start(device, PHONE)
        app.clock.advance(30)
        second = await app.start(device, PHONE)
        app.clock.advance(59)
        still_too_soon = await app.start(device, PHONE)
        app.clock.advance(1)
        third = await app.start(device, PHONE)

        assert too_soon.status_code == 429 and too_soon.headers["Retry-After"] == "30"
        assert second.status_code == 202 and second.json()["resend_after"] == 60
        assert still_too_soon.status_code == 429 and still_too_soon.headers["Retry-After"] == "1"
        assert third.status_code == 202 and third.json()["resend_after"] == 120
        assert len(twilio.sms) == 3


async def test_sends_per_phone_per_hour(database_url: str, twilio: fake_twilio.FakeTwilio) -> None:
    async with otp_app(database_url, twilio, sends_per_phone_per_hour=2) as app:
        statuses = []
        for i in range(3):  # from three addresses: the limit is the number's
            statuses.append((await app.start(app.device(f"203.0.113.{i}"), PHONE)).status_code)
            app.clock.advance(10)
        refused = await app.start(app.device("203.0.113.99"), PHONE)
        app.clock.advance(3600)
        later = await app.start(app.device(), PHONE)

        assert statuses == [202, 202, 429]
        assert refused.status_code == 429
        assert 0 < int(refused.headers["Retry-After"]) <= 3600
        assert refused.json()["details"][0]["field"] == "phone"
        assert later.status_code == 202
        assert len(twilio.sms) == 3


async def test_many_numbers_from_one_address(
    database_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with otp_app(database_url, twilio, phones_per_ip_per_day=3) as app:
        pumper = app.device("192.0.2.66")
        numbers = [f"+1617555{n:04d}" for n in range(101, 106)]
        statuses = [(await app.start(pumper, n)).status_code for n in numbers]
        again = await app.start(pumper, numbers[0])  # a number it already asked for
        elsewhere = await app.start(app.device("192.0.2.67"), numbers[4])
        app.clock.advance(86400)
        tomorrow = await app.start(pumper, numbers[4])

        assert statuses == [202, 202, 202, 429, 429]
        assert again.status_code == 202
        assert elsewhere.status_code == 202
        assert tomorrow.status_code == 202


async def test_sends_per_address_per_hour(sqlite_url: str, twilio: fake_twilio.FakeTwilio) -> None:
    async with otp_app(sqlite_url, twilio, sends_per_ip_per_hour=3) as app:
        device = app.device("192.0.2.66")
        statuses = [(await app.start(device, PHONE)).status_code for _ in range(4)]
        app.clock.advance(3600)
        later = await app.start(device, PHONE)

        assert statuses == [202, 202, 202, 429]
        assert later.status_code == 202


async def test_one_ipv6_network_is_one_address(
    sqlite_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with otp_app(sqlite_url, twilio, sends_per_ip_per_hour=2) as app:
        hosts = ["2001:db8:1:2::1", "2001:db8:1:2::abcd", "2001:db8:1:2:ffff::9"]
        statuses = [(await app.start(app.device(h), PHONE)).status_code for h in hosts]
        other_network = await app.start(app.device("2001:db8:1:3::1"), PHONE)

        assert statuses == [202, 202, 429]
        assert other_network.status_code == 202


async def test_tries_per_address_per_hour(sqlite_url: str, twilio: fake_twilio.FakeTwilio) -> None:
    async with otp_app(sqlite_url, twilio, verifies_per_ip_per_hour=3) as app:
        guesser = app.device("192.0.2.66")
        for number in ("+16175550101", "+16175550102"):
            await app.start(guesser, number)
        tries = [await app.verify(guesser, "+16175550101", "000001") for _ in range(2)]
        tries.append(await app.verify(guesser, "+16175550102", "000001"))
        blocked = await app.verify(guesser, "+16175550102", twilio.last_code("+16175550102"))

        assert [t.status_code for t in tries] == [422, 422, 422]
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0


async def test_tries_per_phone_per_hour(sqlite_url: str, twilio: fake_twilio.FakeTwilio) -> None:
    async with otp_app(sqlite_url, twilio, verifies_per_phone_per_hour=2) as app:
        await app.start(app.device(), PHONE)
        tries = [
            (await app.verify(app.device(f"192.0.2.{i}"), PHONE, "000001")).status_code
            for i in range(3)
        ]

        assert tries == [422, 422, 429]


async def test_a_daily_cap_on_every_number(sqlite_url: str, twilio: fake_twilio.FakeTwilio) -> None:
    async with otp_app(sqlite_url, twilio, sends_per_day=2) as app:
        statuses = [
            (await app.start(app.device(f"192.0.2.{i}"), f"+1617555{i:04d}")).status_code
            for i in range(101, 104)
        ]

        assert statuses == [202, 202, 429]


async def test_an_sms_that_cannot_be_sent_is_an_error(
    sqlite_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with otp_app(sqlite_url, twilio, auth_token="wrong-token") as app:
        answer = await app.start(app.device(), PHONE)

        assert answer.status_code == 502
        assert "credentials" in answer.json()["error"]
        assert twilio.sms == []
        # The unsent code cannot be checked.
        assert (await app.verify(app.device(), PHONE, "123456")).status_code == 410


async def test_a_number_twilio_cannot_reach_is_a_phone_error(
    sqlite_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    twilio.refused[E164] = 21614
    async with otp_app(sqlite_url, twilio) as app:
        answer = await app.start(app.device(), PHONE)

        assert answer.status_code == 422
        assert answer.json()["details"] == [{"field": "phone", "message": "is not a mobile number"}]


async def test_twilio_verify_makes_and_checks_the_code(
    database_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with otp_app(database_url, twilio, provider="twilio_verify") as app:
        device = app.device()
        started = await app.start(device, PHONE)
        code = twilio.pending[E164].code
        wrong = await app.verify(device, PHONE, "000000" if code != "000000" else "111111")
        right = await app.verify(device, PHONE, code)

        assert started.status_code == 202
        assert wrong.status_code == 422
        assert right.status_code == 200 and right.json()["user_id"].startswith("u_")
        assert [r["code_hash"] for r in app.rows(otp_codes)] == [None]
        assert E164 not in twilio.pending  # approved: Twilio forgot it


async def test_console_logs_the_code_with_the_number_masked(
    sqlite_url: str, twilio: fake_twilio.FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with otp_app(sqlite_url, twilio, provider="console") as app:
        device = app.device()
        assert (await app.start(device, PHONE)).status_code == 202
        [line] = [r.getMessage() for r in caplog.records if "console SMS" in r.getMessage()]
        code = line.rsplit(" ", 1)[-1]

        assert (await app.verify(device, PHONE, code)).status_code == 200
        assert "+1********00" in line
        assert twilio.requests == []


FORMATS = [
    "{e164}",
    "{e164_digits}",
    "{national}",
    "{a}-{b}-{c}",
    "({a}) {b}-{c}",
    "{a} {b} {c}",
    "{a}.{b}.{c}",
    "+1 {a} {b} {c}",
]


def clear_forms(e164: str) -> list[str]:
    """Common ways of writing a NANP number."""
    national = e164[2:]
    parts = {"a": national[:3], "b": national[3:6], "c": national[6:]}
    return [f.format(e164=e164, e164_digits=e164[1:], national=national, **parts) for f in FORMATS]


def assert_no_clear_number(text: str, numbers: list[str], where: str) -> None:
    digits = re.sub(r"\D", "", text)
    for e164 in numbers:
        for form in clear_forms(e164):
            assert form not in text, f"{form!r} found in {where}"
        assert e164[2:] not in digits, f"digits of {e164} found in {where}"


async def test_no_clear_number_in_any_table_or_log(
    database_url: str,
    twilio: fake_twilio.FakeTwilio,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    numbers = [E164, "+16175550123", "+16175550188"]
    twilio.refused["+16175550188"] = 21610
    async with otp_app(database_url, twilio, max_attempts=2) as app:
        laptop, phone = app.device("198.51.100.7"), app.device("203.0.113.9")
        user = await app.login(laptop, "(617) 555-0100", E164)
        assert await app.login(phone, "617.555.0100", E164) == user
        await app.login(phone, "+1 617 555 0123", "+16175550123")  # the phone moves user
        await app.start(laptop, "617-555-0188")  # refused by Twilio (opted out)
        app.clock.advance(60)
        await app.start(laptop, "6175550123")
        await app.verify(laptop, "6175550123", "000000")  # wrong (or right: either is fine)
        app.clock.advance(3600)
        await app.verify(laptop, "6175550123", twilio.last_code("+16175550123"))  # expired

        with app.engine.connect() as conn:
            for table in metadata.sorted_tables:
                for row in conn.execute(sa.select(table)):
                    assert_no_clear_number(repr(tuple(row)), numbers, table.name)
        history = app.rows(visitor_users)
        assert len(history) == 3  # laptop -> A, phone -> A, phone -> B

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused" in logged  # the Twilio refusal was logged, masked
    out = capsys.readouterr()
    for text, where in ((logged, "logs"), (out.out, "stdout"), (out.err, "stderr")):
        assert_no_clear_number(text, numbers, where)
