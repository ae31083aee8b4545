"""Codes asked by a person's browsers are theirs (otp_codes.visitor_id, issue 12): exported and
erased with them, on every engine, even codes to numbers that were never verified."""

from __future__ import annotations

from firstparty.identity import cookie
from firstparty.store.models import otp_codes
from tests.fakes import twilio as fake_twilio
from tests.identity.conftest import otp_app

ADMIN = {"Authorization": "Bearer admin-token-for-tests"}
MINE, TYPO, SOMEONE = "+16175550100", "+16175550199", "+16505551212"


async def test_codes_asked_by_a_visitor_are_exported_and_erased(
    database_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with otp_app(database_url, twilio) as app:
        laptop = app.device("198.51.100.7")
        await app.start(laptop, TYPO)  # a mistyped number, never verified
        await app.login(laptop, MINE, MINE)
        await app.login(app.device("203.0.113.9"), SOMEONE, SOMEONE)
        secret = app.settings.secret_key.get_secret_value()
        visitor_id = cookie.read(secret, laptop.cookies[app.settings.cookie.name])
        admin = app.device()

        exported = await admin.get(
            "/v1/admin/privacy/export", params={"visitor_id": visitor_id}, headers=ADMIN
        )
        erased = await admin.post(
            "/v1/admin/privacy/erase", json={"visitor_id": visitor_id}, headers=ADMIN
        )

        assert exported.status_code == 200, exported.text
        codes = exported.json()["otp_codes"]
        assert len(codes) == 2 and {c["visitor_id"] for c in codes} == {visitor_id}
        assert not {"phone_key", "code_hash", "ip"} & set(codes[0])  # keyed hashes stay home
        assert erased.status_code == 200 and erased.json()["removed"]["otp_codes"] == 2
        [left] = app.rows(otp_codes)
        assert left["visitor_id"] not in (None, visitor_id)
