"""Meta Conversions API: server events to a pixel (dataset), up to 1,000 per request.

Reference: destinations.md sections 1 and 6. The access token travels in the JSON body (Meta
accepts it as a body parameter) so that no URL, and no HTTP library error quoting one, ever
carries it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator

from firstparty import platforms
from firstparty.destinations import base
from firstparty.errors import PermanentError, RetryableError
from firstparty.event import Event
from firstparty.identity import pii

ActionSource = Literal[
    "email",
    "website",
    "app",
    "phone_call",
    "chat",
    "physical_store",
    "system_generated",
    "business_messaging",
    "other",
]
# Hashed user_data keys, each sent as a one-element list (Meta accepts a string or a list).
HASHED_KEYS = ("em", "ph", "fn", "ln", "db", "ge", "ct", "st", "zp", "country", "external_id")
# Graph error codes worth trying again (section 1.10; 5000 and 21009 from RudderStack).
TRANSIENT_CODES = frozenset({1, 2, 341, 368, 5000, 21009})
THROTTLE_CODES = frozenset({4, 17, 32, 613, 80003, 80004})
# Codes about the token, the app's permissions or the pixel: no event of the batch can pass.
CONFIG_CODES = frozenset({3, 10, 102, 190, *range(200, 300)})
TOKEN_CODE = 190  # OAuthException: the access token expired, was revoked or is invalid
OBJECT_MISSING = 33  # code 100 subcode 33: the pixel id does not exist or is not reachable
# Where an error names the event at fault: Graph's own path syntax `$['data'][2]` in
# error_user_msg, message or error_data (spec section 6), a bare "data[2]", or an "event_index"
# key (seen in Meta's offline-conversions errors).
CULPRIT = (
    re.compile(r"""\$\[\\?['"]data\\?['"]\]\[(\d+)\]"""),
    re.compile(r"\bdata\[(\d+)\]"),
    re.compile(r"event_index\W{0,6}(\d+)"),
)
# `fb.<subdomain index>.<ms created>.<fbclid or random>`, and the fifth segment Meta's Parameter
# Builder appends (base64url: a 2-character legacy language token or 8 characters).
FB_COOKIE = re.compile(
    r"^fb\.(?P<index>\d)\.(?P<ms>\d{13})\.(?P<value>[A-Za-z0-9_\-]+)"
    r"(?:\.(?P<appendix>[A-Za-z0-9_\-]{2}|[A-Za-z0-9_\-]{8}))?$"
)
# Limited Data Use (section 1.2 and developers.facebook.com/docs/marketing-apis/
# data-processing-options): country 1 = USA, state 1000 = California, 0 = let Meta geolocate.
LDU_KEYS = (
    "data_processing_options",
    "data_processing_options_country",
    "data_processing_options_state",
)
# Meta's baseline rule: customer information made only of one of these sets is invalid.
BASELINE_INVALID = (
    {"ct", "country", "st", "zp", "ge", "client_user_agent"},
    {"db", "client_user_agent"},
    {"fn", "ge"},
    {"ln", "ge"},
)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The Dataset Quality API's Event Match Quality per event name (developers.facebook.com/docs/
# marketing-api/conversions-api/dataset-quality-api): GET {api_base}/dataset_quality.
QUALITY_FIELDS = (
    "web{event_match_quality{composite_score,match_key_feedback{identifier,coverage{percentage}}},"
    "event_name}"
)


class MetaCapiSettings(base.DestinationSettings):
    """A Meta pixel (dataset) and the system-user token allowed to send to it."""

    type: Literal["meta_capi"] = "meta_capi"
    pixel_id: str = Field(pattern=r"^\d{1,20}$")
    access_token: SecretStr
    # Optional: adds appsecret_proof (HMAC-SHA256 of the token) for apps that require it.
    app_secret: SecretStr | None = None
    test_event_code: str | None = None
    api_base: str = "https://graph.facebook.com/v25.0"
    # action_source for events from server sources; browser events are always "website", and so
    # are server-relayed events that carry a page URL and a user agent.
    server_action_source: ActionSource = "system_generated"
    # Limited Data Use for every event (an event's own `properties.data_processing_options`
    # wins): [] sends nothing, ["LDU"] sends LDU with this country and state (0: geolocate).
    data_processing_options: list[Literal["LDU"]] = []
    data_processing_options_country: Literal[0, 1] = 0
    data_processing_options_state: int = Field(default=0, ge=0, le=9999)
    # Visitors who denied ad_user_data: "skip" sends nothing; "send_context_only" sends the
    # event with IP and user agent only (no hashes, external id, fbc or fbp).
    consent_denied: Literal["skip", "send_context_only"] = "skip"

    @field_validator("test_event_code", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return value or None


class MetaCapi(base.Adapter):
    """Sends events to `{api_base}/{pixel_id}/events`."""

    type = "meta_capi"
    settings_model = MetaCapiSettings
    settings: MetaCapiSettings
    max_batch = 1000
    max_event_age = timedelta(days=7)
    match_keys = ("email", "phone", "external_id", "fbc", "fbp", "ip", "user_agent")
    example_settings: ClassVar[Mapping[str, Any]] = {
        "name": "meta",
        "type": "meta_capi",
        "pixel_id": "123456789012345",
        "access_token": "env:META_ACCESS_TOKEN",
        "events": {"page": "PageView", "Lead": "Lead", "Purchase": "Purchase"},
    }

    # ------------------------------------------------------------ before sending

    @property
    def test_mode(self) -> str | None:
        code = self.settings.test_event_code
        return f"test_event_code={code}" if code else None

    def accepted_until(self, event: Event) -> datetime | None:
        return event.occurred_at + self._window(self._action_source(event))

    @staticmethod
    def _window(source: str) -> timedelta:
        """How old an event Meta takes: 62 days for physical_store, else 7 (spec section 1)."""
        return timedelta(days=62 if source == "physical_store" else 7)

    def skip(self, event: Event, now: datetime) -> str | None:
        """Events Meta would refuse, which would make it refuse the whole batch with them."""
        source = self._action_source(event)
        window = self._window(source)
        if now - event.occurred_at > window:
            days = (now - event.occurred_at) / timedelta(days=1)
            return (
                f"event is {days:.1f} days old; Meta accepts {source} events "
                f"up to {window.days} days old"
            )
        if not event.identifiers_allowed and self.settings.consent_denied == "skip":
            return "visitor denied ad_user_data; Meta gets no events without user data"
        return _refusal(self._event(event))

    # ------------------------------------------------------------ building

    def build(
        self, events: Sequence[Event], token: str | None = None
    ) -> list[base.OutgoingRequest]:
        access_token = self.settings.access_token.get_secret_value()
        body: dict[str, Any] = {"data": [self._event(e) for e in events]}
        if self.settings.test_event_code:
            body["test_event_code"] = self.settings.test_event_code
        body["access_token"] = access_token
        secrets = [access_token]
        if self.settings.app_secret is not None:
            key = self.settings.app_secret.get_secret_value().encode()
            proof = hmac.new(key, access_token.encode(), hashlib.sha256).hexdigest()
            body["appsecret_proof"] = proof
            secrets += [self.settings.app_secret.get_secret_value(), proof]
        url = f"{self.settings.api_base.rstrip('/')}/{self.settings.pixel_id}/events"
        return [
            base.OutgoingRequest(
                method="POST",
                url=url,
                event_pks=tuple(e.pk for e in events),
                headers={"Content-Type": "application/json"},
                json=body,
                secrets=tuple(secrets),
            )
        ]

    def _action_source(self, event: Event) -> str:
        """Browser events, and server-relayed ones with a page URL and user agent: website."""
        relayed = _page_url(event.url) is not None and bool(event.context.get("user_agent"))
        if event.source_kind == "browser" or relayed:
            return "website"
        return self.settings.server_action_source

    def _event(self, event: Event) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_name": self.settings.mapped_name(event.name) or event.name,
            "event_time": (event.occurred_at - EPOCH) // timedelta(seconds=1),
            "event_id": event.event_id,
            "action_source": self._action_source(event),
        }
        url = _page_url(event.url)
        if url:
            out["event_source_url"] = url
        if event.referrer:
            out["referrer_url"] = event.referrer
        out["user_data"] = user_data(event)
        custom = custom_data(event.properties)
        if custom:
            out["custom_data"] = custom
        out.update(self._data_processing(event.properties))
        return out

    def _data_processing(self, properties: Mapping[str, Any]) -> dict[str, Any]:
        """LDU fields: the event's own `data_processing_options` if it states any, else ours."""
        stated = properties.get("data_processing_options")
        if isinstance(stated, list) and all(o == "LDU" for o in stated):
            if not stated:
                return {"data_processing_options": []}
            country = properties.get("data_processing_options_country")
            state = properties.get("data_processing_options_state")
            if country not in (0, 1) or not _code(state):
                country, state = 0, 0  # unreadable place: Meta geolocates
            return dict(zip(LDU_KEYS, (["LDU"], country, state), strict=True))
        if not self.settings.data_processing_options:
            return {}
        values = (
            ["LDU"],
            self.settings.data_processing_options_country,
            self.settings.data_processing_options_state,
        )
        return dict(zip(LDU_KEYS, values, strict=True))

    # ------------------------------------------------------------ Event Match Quality

    def quality_requests(
        self, token: str | None, request_ids: Sequence[str]
    ) -> list[base.OutgoingRequest]:
        """`GET dataset_quality?dataset_id=…&fields=web{…}&access_token=…` (a GET: the token
        goes in the query, masked in the request log like every secret)."""
        access_token = self.settings.access_token.get_secret_value()
        query = {"dataset_id": self.settings.pixel_id, "fields": QUALITY_FIELDS}
        query["access_token"] = access_token
        secrets = [access_token]
        if self.settings.app_secret is not None:
            key = self.settings.app_secret.get_secret_value().encode()
            proof = hmac.new(key, access_token.encode(), hashlib.sha256).hexdigest()
            query["appsecret_proof"] = proof
            secrets += [self.settings.app_secret.get_secret_value(), proof]
        url = f"{self.settings.api_base.rstrip('/')}/dataset_quality?"
        return [
            base.OutgoingRequest(
                method="GET",
                url=url + urllib.parse.urlencode(query),
                event_pks=(),
                secrets=tuple(secrets),
            )
        ]

    def read_quality(
        self, request: base.OutgoingRequest, response: base.Response
    ) -> list[base.Verdict]:
        """One verdict per event name in `web`: the composite score and the match keys'
        coverage as Meta states them."""
        error = _graph_error(response)
        if error is not None or response.status != 200:
            reason = _describe(error) if error else f"HTTP {response.status}"
            fails = RetryableError if response.status >= 500 else PermanentError
            raise fails(f"dataset_quality refused: {reason}")
        body = response.json()
        found = []
        for item in body.get("web") or [] if isinstance(body, dict) else []:
            quality = item.get("event_match_quality") if isinstance(item, dict) else None
            if not isinstance(quality, dict) or quality.get("composite_score") is None:
                continue
            found.append(
                base.Verdict(
                    event_name=str(item.get("event_name") or ""),
                    metric="event_match_quality",
                    value=f"{float(quality['composite_score']):g}",
                    detail=_coverage(quality.get("match_key_feedback")),
                )
            )
        return found

    # ------------------------------------------------------------ reading the answer

    def credential_refused(self, status: int, body: str) -> str | None:
        """Graph error 190 (OAuthException): the access token expired or was revoked."""
        error = _graph_error(base.Response(status, {}, body.encode()))
        if error is None or error.get("code") != TOKEN_CODE:
            return None
        return f"Meta refused the access token: {_describe(error)}"

    def interpret(
        self, request: base.OutgoingRequest, response: base.Response
    ) -> dict[str, base.Outcome]:
        pks = request.event_pks
        error = _graph_error(response)
        if 200 <= response.status < 300 and error is None:
            test = isinstance(request.json, dict) and "test_event_code" in request.json
            return dict.fromkeys(pks, base.Delivered(_received(response), test=test))
        if error is None:
            reason = f"HTTP {response.status} from Meta without a Graph error body"
            if response.status in (408, 429) or response.status >= 500:
                return dict.fromkeys(pks, base.Retry(reason, base.retry_after(response.headers)))
            return dict.fromkeys(pks, base.Rejected(reason))
        reason = _describe(error)
        code, subcode = error.get("code"), error.get("error_subcode")
        named = f"Graph {code}" + (f"/{subcode}" if subcode else "")
        retryable = code in TRANSIENT_CODES or code in THROTTLE_CODES
        if error.get("is_transient") is True or retryable or response.status >= 500:
            after = base.retry_after(response.headers)
            return dict.fromkeys(pks, base.Retry(reason, after, code=named))
        if code in CONFIG_CODES or (code == 100 and subcode == OBJECT_MISSING):
            return dict.fromkeys(pks, base.Rejected(reason, named))
        # Anything else is about an event's content, and one bad event sinks the batch. When
        # Meta names it, it alone fails and the rest go again at once as one batch (a second bad
        # event is then named in turn); otherwise each is sent again alone.
        return base.batch_refused(pks, reason, _culprit(error, len(pks)), named)


def user_data(event: Event) -> dict[str, Any]:
    """Meta's user_data: hashes and pixel cookies only when ad_user_data is not denied."""
    out: dict[str, Any] = {}
    if event.identifiers_allowed:
        for key in HASHED_KEYS:
            if event.user.get(key):
                # pii.sha256 leaves a hash alone; it only guards against a clear value slipping in.
                out[key] = [pii.sha256(event.user[key])]
    for key, context_key in (("client_ip_address", "ip"), ("client_user_agent", "user_agent")):
        if event.context.get(context_key):
            out[key] = event.context[context_key]
    if event.identifiers_allowed:
        fbc = freshest_fbc(event)
        if fbc:
            out["fbc"] = fbc
        fbp = event.context.get("fbp")
        if fbp and FB_COOKIE.match(fbp):
            out["fbp"] = fbp  # byte-exact, Parameter Builder appendix included
    return out


def freshest_fbc(event: Event) -> str | None:
    """The `_fbc` cookie or one built from the newest fbclid seen, whichever is newer.

    The cookie's creation time is the milliseconds inside it. It is sent byte-exact (a Parameter
    Builder appendix included) when it carries the newest click, or a click at least as recent
    as any the server saw; an unreadable cookie is not sent (Meta would refuse the event).
    """
    cookie = event.context.get("fbc")
    parsed = FB_COOKIE.match(cookie) if cookie else None
    click = event.click_id("fbclid")
    if click is None:
        return cookie if parsed else None
    if parsed is None or (
        click.value != parsed["value"]
        and click.first_seen_at > EPOCH + timedelta(milliseconds=int(parsed["ms"]))
    ):
        # Meta's format for an fbc built on the server: subdomain index 1, the ms the fbclid was
        # first seen, then the fbclid exactly as it arrived (case matters to Meta).
        return platforms.fbc(click.value, click.first_seen_at)
    return cookie


def _page_url(url: str | None) -> str | None:
    """A page URL Meta takes as event_source_url: http or https only (section 6)."""
    return url if url and url.lower().startswith(("http://", "https://")) else None


def _code(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 9999


def custom_data(properties: Mapping[str, Any]) -> dict[str, Any]:
    """The event's properties as custom_data; ids coerced to strings as Meta expects."""
    out = {k: v for k, v in properties.items() if v is not None and k not in LDU_KEYS}
    if isinstance(out.get("content_ids"), list):
        out["content_ids"] = [str(i) for i in out["content_ids"]]
    if isinstance(out.get("contents"), list):
        out["contents"] = [_content(c) for c in out["contents"]]
    if "order_id" in out:
        out["order_id"] = str(out["order_id"])
    return out


def _content(item: Any) -> Any:
    if isinstance(item, Mapping) and "id" in item:
        return {**item, "id": str(item["id"])}
    return item


def _refusal(event: Mapping[str, Any]) -> str | None:
    """Why Meta would refuse this built event (section 1.14), or None."""
    data = event["user_data"]
    website = event["action_source"] == "website"
    if website and ("event_source_url" not in event or "client_user_agent" not in data):
        return "Meta refuses website events without a page URL and a user agent"
    if event["event_name"] == "Purchase":
        custom = event.get("custom_data", {})
        if custom.get("value") is None or not custom.get("currency"):
            return "Meta refuses Purchase events without value and currency"
    keys = set(data)
    if not keys or any(keys <= invalid for invalid in BASELINE_INVALID):
        have = ", ".join(sorted(keys)) or "nothing"
        return f"Meta needs a user identifier that matches; the event has only: {have}"
    return None


def _coverage(feedback: Any) -> str:
    """Meta's match key feedback in words: `email 95 %, ip_address 100 %`."""
    parts = []
    for key in feedback if isinstance(feedback, list) else []:
        if isinstance(key, dict) and isinstance(key.get("coverage"), dict):
            share = key["coverage"].get("percentage")
            if isinstance(share, int | float):
                parts.append(f"{key.get('identifier')} {share:g} %")
    return ", ".join(sorted(parts))


def _graph_error(response: base.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def _received(response: base.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    return f"events_received={body.get('events_received')} fbtrace_id={body.get('fbtrace_id')}"


def _describe(error: Mapping[str, Any]) -> str:
    """Meta's own words, most specific first, with the codes for the operator. Not the
    request's `fbtrace_id`: the same refusal then reads the same for every request, so the
    failures page counts it as one reason (the trace id is in the outgoing-request log, with
    the rest of Meta's answer)."""
    words = [str(error[k]) for k in ("error_user_title", "error_user_msg") if error.get(k)]
    text = ": ".join(words) or str(error.get("message") or "Meta error")
    if words and error.get("message"):
        text = f"{error['message']} - {text}"
    codes = "/".join(str(error[k]) for k in ("code", "error_subcode") if error.get(k) is not None)
    return f"{text} (code {codes})"


def _culprit(error: Mapping[str, Any], count: int) -> int | None:
    text = json.dumps(error)
    for pattern in CULPRIT:
        match = pattern.search(text)
        if match and int(match.group(1)) < count:
            return int(match.group(1))
    return None
