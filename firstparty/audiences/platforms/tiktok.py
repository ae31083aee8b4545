"""TikTok Custom Audiences: members added or removed with
`POST {api_base}/segment/mapping/` (`action` "add" or "delete"), the `Access-Token` header.

`id_schema` is `["EMAIL_SHA256", "PHONE_SHA256"]`; `batch_data` holds one inner list per person,
one entry per schema key in order: `{"id": <hash>, "audience_ids": [...]}`, or `{}` where the
person has no such identifier. The hashes are those firstparty stores for TikTok's Events API:
email trimmed and lower-cased (`em`), phone in E.164 with "+" (`ph_e164`). TikTok answers HTTP
200 with a `code` (0: done); 40100 is its rate limit, authentication and permission codes refuse
the request (audiences.md, TikTok; codes as in `destinations.tiktok_events`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr

from firstparty.audiences import base
from firstparty.destinations import base as destinations

# TikTok's schema key -> the stored hash it takes, in the order of every request.
SCHEMA = {"EMAIL_SHA256": "em", "PHONE_SHA256": "ph_e164"}
# The customer-file upload (TikTok Ads Help, "List of supported IDs and formats for a customer
# file"): hashed columns; the file's phone is digits without "+", which firstparty stores as `ph`.
FILE_COLUMNS = {"Email_SHA256": "em", "Phone_SHA256": "ph"}
OK = 0
RATE_LIMIT = 40100
# Authentication and permission (as tiktok_events: 40104/40105 unconfirmed token codes).
AUTH_CODES = frozenset({40001, 40101, 40104, 40105})


class TikTokAudienceSettings(destinations.DestinationSettings):
    """A TikTok custom audience (segment) of an advertiser, and an Access-Token for it."""

    type: Literal["tiktok_audience"] = "tiktok_audience"
    advertiser_id: str = Field(pattern=r"^\d{1,24}$")
    audience_id: str = Field(pattern=r"^\d{1,24}$")
    access_token: SecretStr
    api_base: str = "https://business-api.tiktok.com/open_api/v1.3"


class TikTokAudience(base.AudienceAdapter):
    """Adds and removes the members of one TikTok custom audience."""

    type = "tiktok_audience"
    settings_model = TikTokAudienceSettings
    settings: TikTokAudienceSettings
    # TikTok documents no figure for the streaming API (unconfirmed): the other platforms' limit.
    max_members = 10_000
    min_members = 1_000
    identifier_keys = tuple(SCHEMA.values())
    example_settings: ClassVar[Mapping[str, Any]] = {
        "name": "tiktok_buyers",
        "type": "tiktok_audience",
        "advertiser_id": "7000000000000000001",
        "audience_id": "123456789",
        "access_token": "env:TIKTOK_ACCESS_TOKEN",
    }

    def build(
        self, change: base.Change, members: Sequence[base.Member], token: str | None = None
    ) -> list[destinations.OutgoingRequest]:
        usable = [m for m in members if self.usable(m)]
        size = min(self.settings.batch_size or self.max_members, self.max_members)
        return [self._request(change, usable[i : i + size]) for i in range(0, len(usable), size)]

    def person(self, member: base.Member) -> list[dict[str, Any]]:
        """One inner list of `batch_data`: an entry per schema key, `{}` where none."""
        audiences = [self.settings.audience_id]
        return [
            {"id": member.identifiers[key], "audience_ids": audiences}
            if member.identifiers.get(key)
            else {}
            for key in SCHEMA.values()
        ]

    def _request(
        self, change: base.Change, members: Sequence[base.Member]
    ) -> destinations.OutgoingRequest:
        access_token = self.settings.access_token.get_secret_value()
        body = {
            "advertiser_ids": [self.settings.advertiser_id],
            "action": "add" if change is base.Change.ADD else "delete",
            "id_schema": list(SCHEMA),
            "batch_data": [self.person(m) for m in members],
        }
        return destinations.OutgoingRequest(
            method="POST",
            url=f"{self.settings.api_base.rstrip('/')}/segment/mapping/",
            event_pks=tuple(m.key for m in members),
            headers={"Access-Token": access_token, "Content-Type": "application/json"},
            json=body,
            secrets=(access_token,),
        )

    def interpret(
        self, request: destinations.OutgoingRequest, response: destinations.Response
    ) -> dict[str, destinations.Outcome]:
        return dict.fromkeys(request.event_pks, outcome(response))

    def export_file(self, present: Set[str]) -> base.ExportFile:
        """TikTok's customer file with hashed columns: Email_SHA256, Phone_SHA256."""

        def row(m: base.Member) -> list[str] | None:
            cells = [m.identifiers.get(key) or "" for key in FILE_COLUMNS.values()]
            return cells if any(cells) else None

        return base.ExportFile(list(FILE_COLUMNS), row)


def outcome(response: destinations.Response) -> destinations.Outcome:
    """TikTok's answer as one outcome for the whole request (its code, else the HTTP status)."""
    after = destinations.retry_after(response.headers)
    body = _body(response)
    if response.status in (408, 429) or response.status >= 500:
        return destinations.Retry(_http_reason(response, body), after)
    if response.status != 200:
        return destinations.Rejected(_http_reason(response, body))
    code = body.get("code")
    if not isinstance(code, int):
        return destinations.Retry("HTTP 200 from TikTok without a code", after)
    reason = f"{body.get('message') or 'TikTok error'} (code {code})"
    if code == OK:
        return destinations.Delivered(f"request_id={body.get('request_id')}")
    if code == RATE_LIMIT:
        return destinations.Retry(f"TikTok's rate limit: {reason}", after)
    if code in AUTH_CODES:
        return destinations.Rejected(f"TikTok refused the token or its permissions: {reason}")
    if 40000 <= code < 50000:
        return destinations.Rejected(reason)
    return destinations.Retry(reason, after)  # 5xxxx: TikTok's own failure


def _body(response: destinations.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _http_reason(response: destinations.Response, body: Mapping[str, Any]) -> str:
    message = body.get("message") or response.body[:200].decode("utf-8", "replace").strip()
    return f"HTTP {response.status} from TikTok" + (f": {message}" if message else "")
