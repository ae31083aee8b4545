"""SMS pumping (issue 12) through the real app on every engine: the limit per visitor, the hourly
and daily budgets of all numbers together, the countries served, and every refusal a 429 whose
Retry-After is the time until the binding limit frees (the clock moved by hand), counted in
firstparty_otp_refused_total."""

from __future__ import annotations

import re

import pytest

from firstparty.settings import OtpSettings
from firstparty.store.models import otp_codes
from tests.fakes import twilio as fake_twilio
from tests.identity.conftest import otp_app

PHONE = "+16175550100"
OTHER = "+16175550101"
NUMBERS = [f"+1617555{n:04d}" for n in range(200, 230)]


def test_budgets_and_countries_are_on_by_default() -> None:
    otp = OtpSettings()
    assert (otp.sends_per_hour, otp.sends_per_day, otp.sends_per_visitor_per_hour) == (100, 1000, 5)
    assert otp.countries == frozenset({"US"})
    assert OtpSettings(default_region="fr", allowed_countries=["be"]).countries == {"FR", "BE"}
    assert OtpSettings(allowed_countries=["*"]).countries is None


@pytest.mark.parametrize(
    ("countries", "error"),
    [(["*", "US"], '"*" (every country) stands alone'), (["XX"], "'XX' is not an ISO 3166-1")],
)
def test_allowed_countries_are_checked_at_start(countries: list[str], error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        OtpSettings(allowed_countries=countries)


async def test_codes_per_visitor_follow_its_cookie_not_its_address(
    database_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with otp_app(database_url, twilio, sends_per_visitor_per_hour=2) as app:
        laptop = app.device("198.51.100.7")
        first = await app.start(laptop, NUMBERS[0])
        app.clock.advance(100)
        second = await app.start(laptop, NUMBERS[1])
        app.clock.advance(100)
        # The same browser (its fp_id cookie) from another address: still this visitor.
        moved = app.device("203.0.113.9")
        moved.cookies = laptop.cookies
        refused = await app.start(moved, NUMBERS[2])
        fresh = await app.start(app.device("198.51.100.7"), NUMBERS[3])  # a new cookie
        app.clock.advance(3400)
        later = await app.start(laptop, NUMBERS[2])

        assert [first.status_code, second.status_code] == [202, 202]
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "3400"
        assert refused.json()["error"] == "too many codes asked from this browser"
        assert refused.json()["details"][0]["field"] == "phone"
        assert fresh.status_code == 202 and later.status_code == 202
        visitors = [r["visitor_id"] for r in app.rows(otp_codes)]
        assert len(visitors) == 4 and visitors.count(visitors[0]) == 3 and None not in visitors
        assert (await app.refused())["per_visitor"] == 1


async def test_an_hourly_budget_of_codes_to_every_number(
    database_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with otp_app(database_url, twilio, sends_per_hour=3) as app:
        statuses = []
        for i in range(3):  # three visitors, three addresses, three numbers
            answer = await app.start(app.device(f"192.0.2.{i}"), NUMBERS[i])
            statuses.append(answer.status_code)
            app.clock.advance(10)
        refused = await app.start(app.device("192.0.2.50"), NUMBERS[3])
        app.clock.advance(3569)
        still = await app.start(app.device("192.0.2.51"), NUMBERS[4])
        app.clock.advance(1)
        freed = await app.start(app.device("192.0.2.52"), NUMBERS[5])

        assert statuses == [202, 202, 202]
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "3570"
        assert still.status_code == 429 and still.headers["Retry-After"] == "1"
        assert freed.status_code == 202
        assert len(twilio.sms) == 4
        assert (await app.refused())["global_hour"] == 2


async def test_a_daily_budget_of_codes_to_every_number(
    database_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with otp_app(database_url, twilio, sends_per_day=2) as app:
        first = await app.start(app.device("192.0.2.1"), NUMBERS[0])
        app.clock.advance(7200)
        second = await app.start(app.device("192.0.2.2"), NUMBERS[1])
        app.clock.advance(7200)
        refused = await app.start(app.device("192.0.2.3"), NUMBERS[2])
        app.clock.advance(86400 - 14400)
        freed = await app.start(app.device("192.0.2.4"), NUMBERS[3])

        assert (first.status_code, second.status_code, freed.status_code) == (202, 202, 202)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == str(86400 - 14400)
        assert refused.json()["error"] == "this service sent all the codes it may send today"
        assert (await app.refused())["global_day"] == 1


async def test_retry_after_is_the_limit_that_frees_last(
    database_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    """Two limits hit: waiting for the sooner one would only meet the other."""
    overrides = {"sends_per_ip_per_hour": 3, "sends_per_phone_per_hour": 2}
    async with otp_app(database_url, twilio, **overrides) as app:
        device = app.device("192.0.2.66")
        sent = []
        for number in (OTHER, PHONE, PHONE):
            sent.append((await app.start(device, number)).status_code)
            app.clock.advance(600)
        both = await app.start(device, PHONE)  # address: frees in 1800 s; number: in 2400 s
        app.clock.advance(1800)
        number_only = await app.start(device, PHONE)
        app.clock.advance(600)
        freed = await app.start(device, PHONE)

        assert sent == [202, 202, 202]
        assert both.status_code == 429 and both.headers["Retry-After"] == "2400"
        assert both.json()["error"] == "too many codes sent to this number"
        assert number_only.status_code == 429 and number_only.headers["Retry-After"] == "600"
        assert freed.status_code == 202
        refused = await app.refused()
        assert refused["per_phone"] == 2 and refused["per_ip"] == 0


async def test_numbers_per_address_free_a_day_after_their_last_code(
    database_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with otp_app(database_url, twilio, phones_per_ip_per_day=2) as app:
        pumper = app.device("192.0.2.66")
        statuses = []
        for number in (NUMBERS[0], NUMBERS[1], NUMBERS[0]):
            statuses.append((await app.start(pumper, number)).status_code)
            app.clock.advance(100)
        refused = await app.start(pumper, NUMBERS[2])  # at 300 s; NUMBERS[1]'s last: 100 s
        app.clock.advance(86200)
        freed = await app.start(pumper, NUMBERS[2])

        assert statuses == [202, 202, 202]
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "86200"
        assert freed.status_code == 202
        assert (await app.refused())["phones_per_ip"] == 1


def wrong_codes(right: str, n: int) -> list[str]:
    return [c for c in ("000000", "000001", "000002") if c != right][:n]


async def test_resend_wait_and_tries_give_the_seconds_left(
    database_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    overrides = {"resend_interval_seconds": 30, "verifies_per_ip_per_hour": 2}
    async with otp_app(database_url, twilio, **overrides) as app:
        device = app.device("192.0.2.66")
        await app.start(device, PHONE)
        right = twilio.last_code(PHONE)
        app.clock.advance(12)
        resend = await app.start(device, PHONE)
        wrong = [await app.verify(device, PHONE, code) for code in wrong_codes(right, 2)]
        app.clock.advance(60)
        tries = await app.verify(device, PHONE, right)

        assert resend.status_code == 429 and resend.headers["Retry-After"] == "18"
        assert [w.status_code for w in wrong] == [422, 422]
        assert tries.status_code == 429 and tries.headers["Retry-After"] == "3540"
        assert tries.json()["details"][0]["field"] == "code"
        refused = await app.refused()
        assert (refused["resend_wait"], refused["verifies_per_ip"]) == (1, 1)


async def test_tries_per_number_and_a_dead_code(
    database_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    overrides = {"max_attempts": 2, "resend_interval_seconds": 30, "verifies_per_phone_per_hour": 3}
    async with otp_app(database_url, twilio, **overrides) as app:
        await app.start(app.device("192.0.2.1"), PHONE)
        right = twilio.last_code(PHONE)
        for i, code in enumerate(wrong_codes(right, 2)):
            tried = await app.verify(app.device(f"192.0.2.{10 + i}"), PHONE, code)
            assert tried.status_code == 422
        app.clock.advance(10)
        dead = await app.verify(app.device("192.0.2.20"), PHONE, right)  # a new code in 20 s
        app.clock.advance(20)
        assert (await app.start(app.device("192.0.2.1"), PHONE)).status_code == 202
        right = twilio.last_code(PHONE)
        [wrong] = wrong_codes(right, 1)
        assert (await app.verify(app.device("192.0.2.21"), PHONE, wrong)).status_code == 422
        number = await app.verify(app.device("192.0.2.22"), PHONE, right)  # 3 tries this hour

        assert dead.status_code == 429 and dead.headers["Retry-After"] == "20"
        assert dead.json()["details"][0]["message"] == (
            "too many wrong codes; request a new code in 20 s"
        )
        assert number.status_code == 429 and number.headers["Retry-After"] == "3570"
        refused = await app.refused()
        assert (refused["dead_code"], refused["verifies_per_phone"]) == (1, 1)


@pytest.mark.parametrize(
    ("otp", "answers"),
    [
        (  # default_region US: its own country only (Canada shares +1 but is another)
            {},
            {"(617) 555-0100": 202, "+1 416 555 0123": 422, "+33 6 12 34 56 78": 422},
        ),
        ({"allowed_countries": ["CA"]}, {"+1 416 555 0123": 202, "+44 7400 123456": 422}),
        ({"allowed_countries": ["*"]}, {"+33 6 12 34 56 78": 202, "+49 151 23456789": 202}),
        ({"default_region": "FR"}, {"06 12 34 56 78": 202, "+1 617 555 0100": 422}),
    ],
)
async def test_countries_served(
    database_url: str,
    twilio: fake_twilio.FakeTwilio,
    otp: dict[str, object],
    answers: dict[str, int],
) -> None:
    async with otp_app(database_url, twilio, **otp) as app:
        got = {phone: await app.start(app.device(), phone) for phone in answers}

        assert {phone: answer.status_code for phone, answer in got.items()} == answers
        assert len(twilio.sms) == list(answers.values()).count(202)
        for answer in got.values():
            if answer.status_code == 422:
                [detail] = answer.json()["details"]
                assert detail["field"] == "phone" and "codes go to numbers in" in detail["message"]
                assert "Retry-After" not in answer.headers  # not a limit: waiting does not help
        assert (await app.refused())["country"] == list(answers.values()).count(422)


async def test_a_line_type_refusal_is_counted(
    database_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with otp_app(database_url, twilio) as app:
        answer = await app.start(app.device(), "+1 900 555 0100")  # premium rate

        assert answer.status_code == 422
        assert "premium rate" in answer.json()["details"][0]["message"]
        assert (await app.refused())["line_type"] == 1
