"""A fake of Twilio's Messages API and Verify API on one real local HTTP server.

It checks basic auth (20003), the account and service SIDs (20404), the `To` number (21211 on
Messages, 60200 on Verify) and keeps Verify's state: one pending verification per number, at most
5 sends (60203) and 5 checks (60202), forgotten once approved (then 20404). Error bodies carry
Twilio's `code`, `message`, `more_info` and `status`. What a phone would receive is readable as
`fake.last_code(phone)`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs

from tests.fakes.server import FakeServer, Received, Reply

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "twilio-auth-token-for-tests"
SERVICE_SID = "VA" + "1" * 32
FROM_NUMBER = "+15005550006"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
MAX_SENDS = 5
MAX_CHECKS = 5


def twilio_error(status: int, code: int, message: str) -> Reply:
    """An error answer shaped like Twilio's."""
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return Reply(status, body)


@dataclass
class Sms:
    to: str
    body: str


@dataclass
class _Pending:
    code: str
    sends: int = 1
    checks: int = 0


class FakeTwilio(FakeServer):
    """Twilio's Messages and Verify endpoints, enough of them for firstparty's OTP."""

    def __init__(self) -> None:
        super().__init__()
        self.sms: list[Sms] = []
        self.pending: dict[str, _Pending] = {}
        self.refused: dict[str, int] = {}  # To -> Twilio error code to answer with

    def last_code(self, phone: str) -> str:
        """The code in the last SMS sent to this number."""
        for message in reversed(self.sms):
            if message.to == phone:
                found = re.search(r"\d{4,10}", message.body)
                assert found, message.body
                return found.group(0)
        raise AssertionError(f"no SMS sent to {phone}")

    def handle(self, request: Received) -> Reply:
        if request.headers.get("authorization") != _basic(ACCOUNT_SID, AUTH_TOKEN):
            return twilio_error(401, 20003, "Authenticate")
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        path = request.path
        if path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json":
            return self._message(form)
        if path == f"/v2/Services/{SERVICE_SID}/Verifications":
            return self._verification(form)
        if path == f"/v2/Services/{SERVICE_SID}/VerificationCheck":
            return self._check(form)
        return twilio_error(404, 20404, f"The requested resource {path} was not found")

    def _message(self, form: dict[str, str]) -> Reply:
        to = form.get("To", "")
        if not E164.match(to):
            return twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if to in self.refused:
            return twilio_error(400, self.refused[to], f"Cannot send to {to}.")
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return twilio_error(400, 21603, "A 'From' or 'MessagingServiceSid' is required.")
        if not form.get("Body"):
            return twilio_error(400, 21602, "Message body is required.")
        self.sms.append(Sms(to, form["Body"]))
        sid = "SM" + secrets.token_hex(16)
        return Reply(201, {"sid": sid, "status": "queued", "to": to, "body": form["Body"]})

    def _verification(self, form: dict[str, str]) -> Reply:
        to = form.get("To", "")
        if not E164.match(to):
            return twilio_error(400, 60200, f"Invalid parameter `To`: {to}")
        if form.get("Channel") not in ("sms", "call", "whatsapp", "email"):
            return twilio_error(400, 60200, "Invalid parameter: Channel")
        pending = self.pending.get(to)
        if pending is None:
            pending = self.pending[to] = _Pending(str(secrets.randbelow(10**6)).zfill(6))
        elif pending.sends >= MAX_SENDS:
            return twilio_error(429, 60203, "Max send attempts reached")
        else:
            pending.sends += 1  # Verify re-sends the same code while the verification is pending
        self.sms.append(Sms(to, f"Your verification code is: {pending.code}"))
        return Reply(201, {"sid": "VE" + secrets.token_hex(16), "to": to, "status": "pending"})

    def _check(self, form: dict[str, str]) -> Reply:
        to = form.get("To", "")
        pending = self.pending.get(to)
        if pending is None:
            return twilio_error(
                404, 20404, f"The requested resource /Services/{SERVICE_SID}/VerificationCheck"
            )
        pending.checks += 1
        if pending.checks > MAX_CHECKS:
            return twilio_error(429, 60202, "Max check attempts reached")
        if form.get("Code") != pending.code:
            return Reply(200, {"to": to, "status": "pending", "valid": False})
        del self.pending[to]
        return Reply(200, {"to": to, "status": "approved", "valid": True})


def _basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
