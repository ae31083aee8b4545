"""SMS providers for one-time codes, behind one small interface.

    provider        who makes the code   who checks it   what it calls
    console         firstparty           firstparty      nothing: logs the code (development)
    twilio_sms      firstparty           firstparty      Twilio Messages API
    twilio_verify   Twilio               Twilio          Twilio Verify API (Verifications, checks)

`send` either returns (the message was accepted) or raises: `SmsError` (502/503, the provider
failed or refused us) or `InputError` (the number cannot receive SMS, or the provider's own
limit was hit). Transport errors, 5xx and Twilio's 20429 are retried with a short backoff.
A clear phone number is never logged: only `mask(phone)`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp

from firstparty.errors import ConfigError, FieldError, FirstpartyError, InputError
from firstparty.settings import OtpSettings

log = logging.getLogger(__name__)

MESSAGES_BASE = "https://api.twilio.com"
VERIFY_BASE = "https://verify.twilio.com"
BACKOFF = (0.25, 1.0)  # seconds before the 2nd and 3rd try
TIMEOUT = 10.0
SMS_TEXT = "Your verification code is {code}"
# Long digit runs in a provider's message may be the number itself: masked before logging.
_DIGIT_RUN = re.compile(r"\+?\d[\d\s().\-]{5,}\d")

# Twilio error codes that mean "this number cannot get the SMS": the caller must fix the phone.
PHONE_REFUSED = {
    21211: "is not a valid number for SMS",
    21214: "is not a reachable number",
    21408: "is in a country this service does not send to",
    21610: "has opted out of messages from this service",
    21612: "cannot be reached from this service's number",
    21614: "is not a mobile number",
    60205: "cannot receive SMS (landline)",
    60410: "is blocked by the provider's fraud controls",
}


class SmsError(FirstpartyError):
    """The provider could not be reached (503) or failed us (502); no code was sent."""

    def __init__(self, message: str, *, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


def mask(phone: str) -> str:
    """A loggable form of a phone number: country code and the last two digits."""
    digits = re.sub(r"\D", "", phone)
    if len(digits) < 6:
        return "*" * len(digits)
    head = digits[:1] if phone.startswith("+") else ""
    return f"{'+' if head else ''}{head}{'*' * (len(digits) - len(head) - 2)}{digits[-2:]}"


def scrub(text: str) -> str:
    """A provider's message with anything that looks like a phone number masked."""
    return _DIGIT_RUN.sub(lambda m: mask(m.group(0)), text)


class Provider:
    """Sends a one-time code; providers that make their own codes also check them."""

    name: ClassVar[str]
    makes_codes: ClassVar[bool] = False

    async def send(self, *, phone: str, code: str | None) -> None:
        """Send `code` (or, when `makes_codes`, a code of the provider's own) to "+E.164"."""
        raise NotImplementedError

    async def check(self, *, phone: str, code: str) -> bool:
        """Whether `code` is the one sent to `phone` (only for providers that make codes)."""
        raise NotImplementedError


class Console(Provider):
    """Development: the code goes to the log instead of a phone."""

    name = "console"

    async def send(self, *, phone: str, code: str | None) -> None:
        log.warning("console SMS to %s: your code is %s", mask(phone), code)


@dataclass(frozen=True)
class TwilioAccount:
    """Credentials and endpoint shared by both Twilio providers."""

    account_sid: str
    auth_token: str = field(repr=False)
    api_base: str
    backoff: tuple[float, ...] = BACKOFF
    timeout: float = TIMEOUT


class _Twilio(Provider):
    """What both Twilio providers share: basic auth, form posts, retries, error mapping."""

    def __init__(self, account: TwilioAccount) -> None:
        self.account = account

    async def _post(
        self, path: str, form: Mapping[str, str], phone: str, *, checking: bool = False
    ) -> dict[str, Any]:
        """POST the form; the JSON answer on 2xx, else raise the matching error."""
        account = self.account
        url = account.api_base.rstrip("/") + path
        last = "no answer"
        credentials = f"{account.account_sid}:{account.auth_token}".encode()
        auth = {"Authorization": "Basic " + base64.b64encode(credentials).decode()}
        timeout = aiohttp.ClientTimeout(total=account.timeout)
        async with aiohttp.ClientSession(timeout=timeout, headers=auth) as client:
            for delay in (0.0, *account.backoff):
                if delay:
                    await asyncio.sleep(delay)
                try:
                    async with client.post(url, data=dict(form)) as response:
                        status, raw = response.status, await response.read()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last = f"cannot reach Twilio ({type(exc).__name__})"
                    log.warning("%s for %s: %s", self.name, mask(phone), last)
                    continue
                body = _json(raw)
                if status >= 500 or body.get("code") == 20429:
                    last = f"Twilio answered {status}"
                    log.warning("%s for %s: %s", self.name, mask(phone), last)
                    continue
                if 200 <= status < 300:
                    return body
                raise self._refusal(status, body, phone, checking)
        tries = 1 + len(account.backoff)
        raise SmsError(
            f"SMS provider unavailable ({last}, {tries} tries); no code was sent", status=503
        )

    def _refusal(
        self, status: int, body: Mapping[str, Any], phone: str, checking: bool
    ) -> Exception:
        """The error for a 4xx answer with Twilio's {code, message, more_info, status}."""
        code = body.get("code")
        message = scrub(str(body.get("message", "")))
        log.warning(
            "%s refused %s: HTTP %s, Twilio %s: %s (%s)",
            self.name,
            mask(phone),
            status,
            code,
            message,
            body.get("more_info", ""),
        )
        if isinstance(code, int) and code in PHONE_REFUSED:
            reason = PHONE_REFUSED[code]
            return InputError(422, "phone cannot receive SMS", [FieldError("phone", reason)])
        if code == 60200 and "to" in message.lower():
            return InputError(422, "phone cannot receive SMS", [FieldError("phone", message)])
        if code == 60203:
            return InputError(
                429,
                "too many codes sent to this number",
                [FieldError("phone", "too many codes sent to this number; try again later")],
                {"Retry-After": "600"},
            )
        if code == 60202:
            return InputError(
                429,
                "too many wrong codes",
                [FieldError("code", "too many wrong codes; request a new code later")],
                {"Retry-After": "600"},
            )
        if checking and (code == 20404 or status == 404):
            # Verify forgets a verification once approved, expired or out of tries.
            return InputError(
                410, "code expired", [FieldError("code", "expired or used; request a new code")]
            )
        if code == 20003:
            return SmsError("SMS provider refused our credentials (Twilio 20003); no code was sent")
        return SmsError(f"SMS provider refused the request (Twilio {code}: {message})")


class TwilioSms(_Twilio):
    """Our own code, sent through Twilio's Messages API."""

    name = "twilio_sms"

    def __init__(self, account: TwilioAccount, *, sender: str, text: str = SMS_TEXT) -> None:
        super().__init__(account)
        self.sender = sender
        self.text = text

    async def send(self, *, phone: str, code: str | None) -> None:
        if code is None:
            raise ValueError("twilio_sms sends firstparty's code: code is required")
        # A Messaging Service SID (MG...) picks the sending number from its pool.
        key = "MessagingServiceSid" if self.sender.startswith("MG") else "From"
        form = {"To": phone, key: self.sender, "Body": self.text.format(code=code)}
        path = f"/2010-04-01/Accounts/{self.account.account_sid}/Messages.json"
        await self._post(path, form, phone)
        log.info("twilio_sms: code sent to %s", mask(phone))


class TwilioVerify(_Twilio):
    """Twilio Verify makes, sends and checks the code."""

    name = "twilio_verify"
    makes_codes = True

    def __init__(self, account: TwilioAccount, *, service_sid: str) -> None:
        super().__init__(account)
        self.service_sid = service_sid

    async def send(self, *, phone: str, code: str | None) -> None:
        form = {"To": phone, "Channel": "sms"}
        await self._post(f"/v2/Services/{self.service_sid}/Verifications", form, phone)
        log.info("twilio_verify: verification started for %s", mask(phone))

    async def check(self, *, phone: str, code: str) -> bool:
        form = {"To": phone, "Code": code}
        path = f"/v2/Services/{self.service_sid}/VerificationCheck"
        body = await self._post(path, form, phone, checking=True)
        return body.get("status") == "approved"


def provider_for(otp: OtpSettings, *, backoff: Sequence[float] = BACKOFF) -> Provider:
    """The configured provider; ConfigError naming the missing key (call it at start-up too)."""
    if otp.provider == "console":
        return Console()
    token = otp.auth_token.get_secret_value() if otp.auth_token else None
    default_base = MESSAGES_BASE if otp.provider == "twilio_sms" else VERIFY_BASE
    account = TwilioAccount(
        account_sid=_required(otp.account_sid, "account_sid", otp.provider),
        auth_token=_required(token, "auth_token", otp.provider),
        api_base=otp.api_base or default_base,
        backoff=tuple(backoff),
    )
    if otp.provider == "twilio_sms":
        sender = _required(otp.from_number, "from_number", otp.provider)
        return TwilioSms(account, sender=sender)
    return TwilioVerify(
        account, service_sid=_required(otp.service_sid, "service_sid", otp.provider)
    )


def _required(value: str | None, key: str, provider: str) -> str:
    if not value:
        raise ConfigError(f"otp.{key}: required when otp.provider = {provider!r}")
    return value


def _json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
