"""The SMS providers against a fake Twilio over real HTTP: requests, retries, error mapping."""

from __future__ import annotations

import logging
import socket
from urllib.parse import parse_qs

import pytest

from firstparty.errors import ConfigError, InputError
from firstparty.identity import sms
from firstparty.settings import OtpSettings
from tests.fakes import twilio as fake_twilio
from tests.fakes.server import Reply

E164 = "+16175550100"
NO_WAIT = (0.0, 0.0)


def account(url: str, token: str = fake_twilio.AUTH_TOKEN) -> sms.TwilioAccount:
    return sms.TwilioAccount(fake_twilio.ACCOUNT_SID, token, url, backoff=NO_WAIT)


def messages(url: str, sender: str = fake_twilio.FROM_NUMBER) -> sms.TwilioSms:
    return sms.TwilioSms(account(url), sender=sender)


def verify(url: str) -> sms.TwilioVerify:
    return sms.TwilioVerify(account(url), service_sid=fake_twilio.SERVICE_SID)


def form(request: object) -> dict[str, str]:
    body: bytes = request.body  # type: ignore[attr-defined]
    return {k: v[0] for k, v in parse_qs(body.decode()).items()}


async def test_twilio_sms_posts_our_code(twilio: fake_twilio.FakeTwilio) -> None:
    await messages(twilio.url).send(phone=E164, code="042917")

    [request] = twilio.requests
    assert request.path == f"/2010-04-01/Accounts/{fake_twilio.ACCOUNT_SID}/Messages.json"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert form(request) == {
        "To": E164,
        "From": fake_twilio.FROM_NUMBER,
        "Body": "Your verification code is 042917",
    }
    assert twilio.last_code(E164) == "042917"


async def test_a_messaging_service_sends_from_its_pool(twilio: fake_twilio.FakeTwilio) -> None:
    await messages(twilio.url, sender="MG" + "2" * 32).send(phone=E164, code="123456")

    assert form(twilio.requests[0])["MessagingServiceSid"] == "MG" + "2" * 32


async def test_5xx_is_retried_then_sent(twilio: fake_twilio.FakeTwilio) -> None:
    twilio.script(Reply(503, b"busy"), fake_twilio.twilio_error(429, 20429, "Too Many Requests"))

    await messages(twilio.url).send(phone=E164, code="123456")

    assert len(twilio.requests) == 3
    assert twilio.last_code(E164) == "123456"


async def test_a_provider_down_for_every_try_is_503(twilio: fake_twilio.FakeTwilio) -> None:
    twilio.script(Reply(500), Reply(502), Reply(503))

    with pytest.raises(sms.SmsError) as caught:
        await messages(twilio.url).send(phone=E164, code="123456")

    assert caught.value.status == 503
    assert "3 tries" in str(caught.value)
    assert twilio.sms == []


async def test_an_unreachable_provider_is_503() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(sms.SmsError) as caught:
        await messages(f"http://127.0.0.1:{port}").send(phone=E164, code="123456")

    assert caught.value.status == 503
    assert "cannot reach" in str(caught.value)


async def test_bad_credentials_are_502_and_never_logged(
    twilio: fake_twilio.FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    provider = sms.TwilioSms(account(twilio.url, token="leaked-if-logged"), sender="+15005550006")

    with pytest.raises(sms.SmsError) as caught:
        await provider.send(phone=E164, code="123456")

    assert caught.value.status == 502 and "20003" in str(caught.value)
    assert len(twilio.requests) == 1  # not retried
    assert "leaked-if-logged" not in caplog.text


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (21211, "is not a valid number for SMS"),
        (21614, "is not a mobile number"),
        (21610, "has opted out of messages from this service"),
        (21408, "is in a country this service does not send to"),
    ],
)
async def test_numbers_that_cannot_get_sms_are_422_on_phone(
    twilio: fake_twilio.FakeTwilio, caplog: pytest.LogCaptureFixture, code: int, message: str
) -> None:
    caplog.set_level(logging.DEBUG)
    twilio.refused[E164] = code

    with pytest.raises(InputError) as caught:
        await messages(twilio.url).send(phone=E164, code="123456")

    assert caught.value.status == 422
    assert [(d.field, d.message) for d in caught.value.details] == [("phone", message)]
    assert "6175550100" not in caplog.text  # Twilio's message names the number: masked


async def test_other_refusals_are_502_with_twilios_reason(twilio: fake_twilio.FakeTwilio) -> None:
    with pytest.raises(sms.SmsError) as caught:
        await messages(twilio.url, sender="").send(phone=E164, code="123456")

    assert caught.value.status == 502 and "21603" in str(caught.value)


async def test_verify_sends_and_checks(twilio: fake_twilio.FakeTwilio) -> None:
    provider = verify(twilio.url)
    await provider.send(phone=E164, code=None)
    code = twilio.pending[E164].code

    assert form(twilio.requests[0]) == {"To": E164, "Channel": "sms"}
    assert await provider.check(phone=E164, code="999999" if code != "999999" else "0") is False
    assert await provider.check(phone=E164, code=code) is True
    with pytest.raises(InputError) as gone:  # approved: Twilio forgets it
        await provider.check(phone=E164, code=code)
    assert gone.value.status == 410


async def test_verify_send_limit_is_429(twilio: fake_twilio.FakeTwilio) -> None:
    provider = verify(twilio.url)
    for _ in range(fake_twilio.MAX_SENDS):
        await provider.send(phone=E164, code=None)

    with pytest.raises(InputError) as caught:
        await provider.send(phone=E164, code=None)

    assert caught.value.status == 429 and caught.value.headers["Retry-After"]


async def test_verify_check_limit_is_429(twilio: fake_twilio.FakeTwilio) -> None:
    provider = verify(twilio.url)
    await provider.send(phone=E164, code=None)
    wrong = "1" if twilio.pending[E164].code != "1" else "2"
    for _ in range(fake_twilio.MAX_CHECKS):
        assert await provider.check(phone=E164, code=wrong) is False

    with pytest.raises(InputError) as caught:
        await provider.check(phone=E164, code=twilio.pending[E164].code)

    assert caught.value.status == 429


async def test_verify_invalid_to_is_422_on_phone(twilio: fake_twilio.FakeTwilio) -> None:
    with pytest.raises(InputError) as caught:
        await verify(twilio.url).send(phone="+1", code=None)

    assert caught.value.status == 422 and caught.value.details[0].field == "phone"


async def test_console_logs_masked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await sms.Console().send(phone=E164, code="123456")

    assert "console SMS to +1********00: your code is 123456" in caplog.text


@pytest.mark.parametrize(
    ("provider", "missing"),
    [
        ({"provider": "twilio_sms", "auth_token": "x", "from_number": "+1"}, "otp.account_sid"),
        ({"provider": "twilio_sms", "account_sid": "AC1", "auth_token": "x"}, "otp.from_number"),
        ({"provider": "twilio_verify", "account_sid": "AC1"}, "otp.auth_token"),
        ({"provider": "twilio_verify", "account_sid": "AC1", "auth_token": "x"}, "otp.service_sid"),
    ],
)
def test_missing_provider_settings_name_the_key(provider: dict[str, str], missing: str) -> None:
    with pytest.raises(ConfigError, match=missing):
        sms.provider_for(OtpSettings.model_validate(provider))


def test_default_hosts_are_twilios() -> None:
    base = {"account_sid": "AC1", "auth_token": "x"}
    sms_provider = sms.provider_for(
        OtpSettings.model_validate({**base, "provider": "twilio_sms", "from_number": "+1"})
    )
    verify_provider = sms.provider_for(
        OtpSettings.model_validate({**base, "provider": "twilio_verify", "service_sid": "VA1"})
    )

    assert isinstance(sms_provider, sms.TwilioSms)
    assert sms_provider.account.api_base == "https://api.twilio.com"
    assert isinstance(verify_provider, sms.TwilioVerify)
    assert verify_provider.account.api_base == "https://verify.twilio.com"


@pytest.mark.parametrize(
    ("raw", "masked"),
    [("+16175550100", "+1********00"), ("6175550100", "********00"), ("12", "**")],
)
def test_mask(raw: str, masked: str) -> None:
    assert sms.mask(raw) == masked


def test_scrub_masks_numbers_in_provider_messages() -> None:
    text = "The 'To' number +1 (617) 555-0100 is not valid; see error 21211."

    assert "617" not in sms.scrub(text) and "21211" in sms.scrub(text)
