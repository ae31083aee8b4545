"""TikTok Events API 2.0: web events to a pixel, up to 1,000 per request.

Reference: destinations.md sections 2 and 6. TikTok answers HTTP 200 even when it refuses the
work, so the outcome is read from the body's `code`: only authentication and permission codes
fail the whole request; any other refusal is about an event, which fails alone while the rest
are delivered. The treatment of codes TikTok does not document is configurable
(`code_treatment`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator

from firstparty.destinations import base
from firstparty.event import Event
from firstparty.identity import pii

Treatment = Literal["delivered", "retry", "rejected"]
# Our hash keys -> TikTok's user keys (all SHA-256; TikTok's phone rule is E.164 with "+").
HASHED_KEYS = {
    "em": "email",
    "ph_e164": "phone",
    "external_id": "external_id",
    "fn": "first_name",
    "ln": "last_name",
    "zp": "zip_code",
}
# Sections 2.9 and 6. 20001 is a partial success, read per event (`_partial`); 40104/40105
# (token problems) are unconfirmed and taken as permanent; see `treatment` for the rest.
CODES: dict[int, Treatment] = {
    0: "delivered",
    20001: "delivered",
    40001: "rejected",
    40002: "rejected",
    40100: "retry",
    40101: "rejected",
    40104: "rejected",
    40105: "rejected",
}
PARTIAL = 20001
# Authentication and permission: no event of the request can pass. Every other refusal is about
# an event's content (40000 "Invalid Price Field", 40002 "data.3.properties...") and isolated.
REQUEST_CODES = frozenset({40001, 40101, 40104, 40105})
# TikTok names an event by its path in the request: "data.3.properties.value: ...".
CULPRIT = re.compile(r"\b(?:data|Batch)\.(\d+)[.:]")
# Meta-style Limited Data Use stated on an event (see meta_capi): TikTok's flag is per event.
LDU_KEYS = (
    "data_processing_options",
    "data_processing_options_country",
    "data_processing_options_state",
)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class TikTokEventsSettings(base.DestinationSettings):
    """A TikTok pixel and the Events API access token generated for it."""

    type: Literal["tiktok_events"] = "tiktok_events"
    pixel_code: str = Field(pattern=r"^[A-Za-z0-9]{1,64}$")
    access_token: SecretStr
    test_event_code: str | None = None
    api_base: str = "https://business-api.tiktok.com/open_api/v1.3"
    # TikTok publishes no age limit; 28 days is a third party's figure (unconfirmed).
    max_event_age_days: float | None = Field(default=28, gt=0)
    # Whether test events may share a request; RudderStack sends them one by one (unconfirmed).
    batch_test_events: bool = False
    # Overrides of how an answer `code` is treated, e.g. {20001 = "retry", 51000 = "rejected"}.
    code_treatment: dict[int, Treatment] = {}
    # Visitors who denied ad_user_data: "skip" sends nothing; "send_context_only" sends the
    # event with IP and user agent only (no hashes, external id, ttclid or ttp).
    consent_denied: Literal["skip", "send_context_only"] = "skip"

    @field_validator("test_event_code", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return value or None


class TikTokEvents(base.Adapter):
    """Sends events to `{api_base}/event/track/` with the `Access-Token` header."""

    type = "tiktok_events"
    settings_model = TikTokEventsSettings
    settings: TikTokEventsSettings
    max_batch = 1000
    max_event_age = timedelta(days=28)
    match_keys = ("email", "phone", "external_id", "ttclid", "ttp", "ip", "user_agent")
    example_settings: ClassVar[Mapping[str, Any]] = {
        "name": "tiktok",
        "type": "tiktok_events",
        "pixel_code": "CABCDEFGHIJ123456789",
        "access_token": "env:TIKTOK_ACCESS_TOKEN",
        "events": {"page": "Pageview", "Lead": "Lead", "Purchase": "Purchase"},
    }

    @property
    def test_mode(self) -> str | None:
        code = self.settings.test_event_code
        return f"test_event_code={code}" if code else None

    @property
    def age_limit(self) -> timedelta | None:
        days = self.settings.max_event_age_days
        return None if days is None else timedelta(days=days)

    def skip(self, event: Event, now: datetime) -> str | None:
        """Events past the configured age window, or from visitors who denied ad_user_data."""
        days = self.settings.max_event_age_days
        age = (now - event.occurred_at) / timedelta(days=1)
        if days is not None and age > days:
            return (
                f"event is {age:.1f} days old; TikTok is sent events up to {days:g} days old "
                "(setting max_event_age_days)"
            )
        if not event.identifiers_allowed and self.settings.consent_denied == "skip":
            return "visitor denied ad_user_data; not sent to TikTok"
        return None

    # ------------------------------------------------------------ building

    def build(
        self, events: Sequence[Event], token: str | None = None
    ) -> list[base.OutgoingRequest]:
        if self.settings.test_event_code and not self.settings.batch_test_events:
            return [self._request([e]) for e in events]
        return [self._request(events)]

    def _request(self, events: Sequence[Event]) -> base.OutgoingRequest:
        access_token = self.settings.access_token.get_secret_value()
        body: dict[str, Any] = {
            "event_source": "web",
            "event_source_id": self.settings.pixel_code,
            "data": [self._event(e) for e in events],
        }
        if self.settings.test_event_code:
            body["test_event_code"] = self.settings.test_event_code
        return base.OutgoingRequest(
            method="POST",
            url=f"{self.settings.api_base.rstrip('/')}/event/track/",
            event_pks=tuple(e.pk for e in events),
            headers={"Access-Token": access_token, "Content-Type": "application/json"},
            json=body,
            secrets=(access_token,),
        )

    def _event(self, event: Event) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": self.settings.mapped_name(event.name) or event.name,
            "event_time": (event.occurred_at - EPOCH) // timedelta(seconds=1),
            "event_id": event.event_id,
            "user": user(event),
        }
        page = {k: v for k, v in (("url", event.url), ("referrer", event.referrer)) if v}
        if page:
            out["page"] = page
        props = properties(event.properties)
        if props:
            out["properties"] = props
        stated = event.properties.get("data_processing_options")
        if isinstance(stated, list) and "LDU" in stated:
            out["limited_data_use"] = True
        return out

    # ------------------------------------------------------------ reading the answer

    def interpret(
        self, request: base.OutgoingRequest, response: base.Response
    ) -> dict[str, base.Outcome]:
        pks = request.event_pks
        after = base.retry_after(response.headers)
        body = _body(response)
        if response.status in (408, 429) or response.status >= 500:
            return dict.fromkeys(pks, base.Retry(_http_reason(response, body), after))
        if response.status != 200:
            return dict.fromkeys(pks, base.Rejected(_http_reason(response, body)))
        code = body.get("code")
        if not isinstance(code, int):
            # Not TikTok's answer (a proxy page?); resending is safe, TikTok dedups by event_id.
            return dict.fromkeys(pks, base.Retry("HTTP 200 from TikTok without a code", after))
        reason = f"{body.get('message') or 'TikTok error'} (code {code})"
        treatment = self.treatment(code)
        test = "test_event_code" in (request.json or {})
        if treatment == "delivered":
            detail = f"request_id={body.get('request_id')}" + (f" {reason}" if code else "")
            if code == PARTIAL and code not in self.settings.code_treatment:
                return _partial(pks, body, reason, base.Delivered(detail, test=test))
            return dict.fromkeys(pks, base.Delivered(detail, test=test))
        named = f"TikTok {code}"
        if treatment == "retry":
            return dict.fromkeys(pks, base.Retry(reason, after, code=named))
        if code in REQUEST_CODES or code in self.settings.code_treatment:
            return dict.fromkeys(pks, base.Rejected(reason, named))
        culprit = _culprit(str(body.get("message")), len(pks))
        return base.batch_refused(pks, reason, culprit, named)

    def treatment(self, code: int) -> Treatment:
        """What an answer code means: the settings' override, the table, else by its range."""
        if code in self.settings.code_treatment:
            return self.settings.code_treatment[code]
        if code in CODES:
            return CODES[code]
        # Undocumented 4xxxx are taken as request errors; anything else (5xxxx server errors,
        # unknown ranges) is retried: TikTok dedups by event_id and max_attempts bounds it.
        return "rejected" if 40000 <= code < 50000 else "retry"


def user(event: Event) -> dict[str, Any]:
    """TikTok's user object: hashes, ttclid and ttp only when ad_user_data is not denied."""
    out: dict[str, Any] = {}
    if event.identifiers_allowed:
        for ours, theirs in HASHED_KEYS.items():
            if event.user.get(ours):
                out[theirs] = pii.sha256(event.user[ours])
        click = event.click_id("ttclid")
        if click is not None:
            out["ttclid"] = click.value
        if event.context.get("ttp"):
            out["ttp"] = event.context["ttp"]
    for key, context_key in (("ip", "ip"), ("user_agent", "user_agent")):
        if event.context.get(context_key):
            out[key] = event.context[context_key]
    return out


def properties(props: Mapping[str, Any]) -> dict[str, Any]:
    """The event's properties; ids coerced to strings (TikTok refuses a numeric content_id)."""
    out = {k: v for k, v in props.items() if v is not None and k not in LDU_KEYS}
    for key in ("order_id", "shop_id"):
        if key in out:
            out[key] = str(out[key])
    if isinstance(out.get("content_ids"), list):
        out["content_ids"] = [str(i) for i in out["content_ids"]]
    if isinstance(out.get("contents"), list):
        out["contents"] = [_content(c) for c in out["contents"]]
    return out


def _content(item: Any) -> Any:
    if isinstance(item, Mapping) and "content_id" in item:
        return {**item, "content_id": str(item["content_id"])}
    return item


def _body(response: base.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _http_reason(response: base.Response, body: Mapping[str, Any]) -> str:
    if response.status == 401 and not body.get("message"):
        return "TikTok refused the Access-Token (HTTP 401)"
    message = body.get("message") or response.body[:200].decode("utf-8", "replace").strip()
    return f"HTTP {response.status} from TikTok" + (f": {message}" if message else "")


def _partial(
    pks: Sequence[str], body: Mapping[str, Any], reason: str, delivered: base.Delivered
) -> dict[str, base.Outcome]:
    """20001: the events TikTok names as failed are rejected, the others delivered.

    TikTok names them by path (`data.<i>.`) in `message` or in `data` (exact layout
    unconfirmed, section 2.9). When it names none, a lone event was delivered; a larger batch
    is sent again one event per request, which TikTok's event_id deduplication (48 h, section
    2.6) makes safe for the events it already took.
    """
    text = " ; ".join(str(body[k]) for k in ("message", "data") if body.get(k))
    failed = {int(i) for i in CULPRIT.findall(text) if int(i) < len(pks)}
    if not failed and len(pks) > 1:
        alone = f"partial success without the failed events named ({reason}); sent again alone"
        return dict.fromkeys(pks, base.Retry(alone, 0, True))
    return {
        pk: base.Rejected(_own_words(text, i, reason)) if i in failed else delivered
        for i, pk in enumerate(pks)
    }


def _own_words(text: str, index: int, reason: str) -> str:
    """What the answer says about the event at `index` ("data.1.properties.value: ..."), or all."""
    match = re.search(rf"\b(?:data|Batch)\.{index}[.:][^;'\"{{}}\[\]]*", text)
    code = reason[reason.rfind(" (code ") :]
    return match.group(0).strip() + code if match else reason


def _culprit(message: str, count: int) -> int | None:
    match = CULPRIT.search(message)
    return int(match.group(1)) if match and int(match.group(1)) < count else None
