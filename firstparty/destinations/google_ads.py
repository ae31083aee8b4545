"""Google Ads offline click conversions: the Data Manager API (default) or the legacy upload.

`api = "data_manager"` sends `POST {api_base}/events:ingest` (destinations.md §3b): fail-fast
validation, so one bad event rejects the whole request; the offending events are found from
`BadRequest.fieldViolations` (`events[<n>]`), rejected, and the rest retried at once. An
accepted request is only queued: its `requestId` is followed up with `GET
{api_base}/requestStatus:retrieve` (§3b.9) until Google's final status per destination, which
decides `delivered` or `failed` and is recorded with its error counts and match-rate range.
`api = "google_ads_api"` sends `POST {api_base}/customers/{cid}:uploadClickConversions` (§3) with
`partialFailure: true`; per-row errors arrive in an HTTP 200 and map to events by index.

Both build one canonical conversion per event (`google_conversion`), then serialise it for the
chosen API:

* the click id: exactly one of gclid, gbraid, wbraid: the most recently first seen click that
  was seen at or before the conversion (Google refuses a conversion dated before its click,
  CONVERSION_PRECEDES_EVENT) and at most `click_window_days` before the upload (EXPIRED_EVENT);
  on a tie gclid, then wbraid (the web id), then gbraid. The Google tag's `_gcl_aw` cookie
  (`GCL.<unix seconds>.<gclid>`) counts as a gclid first seen at its own timestamp;
* user identifiers (unless `ad_user_data` is denied): the hashed email with Google's gmail rule
  (`em_google`, else `em`), the hashed E.164 phone with "+" (`ph_e164`) and, for Data Manager,
  the address: hashed first and last name (`fn`, `ln`) with the postal code and country code
  in clear (`postal_code`, `country_code`), as Google requires (§3b.4), when all four are known;
* consent: `ad_user_data` / `ad_personalization` from the event, when stated
  (the legacy API takes `adUserData` only, §3.4);
* `transactionId` / `orderId` is our event id, so retries become no-op adjustments (§3b.6).

Credentials (`oauth`, JSON text, normally `"env:GOOGLE_OAUTH_JSON"`), one of:

* refresh token: `{"client_id": ..., "client_secret": ..., "refresh_token": ...}`
  (the `authorized_user` file of `gcloud auth application-default login` has this shape);
* service account key file: `{"type": "service_account", "client_email": ..., "private_key":
  ..., "private_key_id": ...}`, exchanged as a signed JWT (needs the `cryptography` package).

The refresh token or service account must carry the scope of the chosen API: `datamanager`
for Data Manager, `adwords` for the legacy upload.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from firstparty import platforms
from firstparty.destinations import base, google_conversion, google_rpc
from firstparty.errors import PermanentError, RetryableError
from firstparty.event import Event
from firstparty.settings import UNSET_SECRET

DATA_MANAGER_BASE = "https://datamanager.googleapis.com/v1"
GOOGLE_ADS_BASE = "https://googleads.googleapis.com/v26"
SCOPES = {
    "data_manager": "https://www.googleapis.com/auth/datamanager",
    "google_ads_api": "https://www.googleapis.com/auth/adwords",
}
CLICK_KINDS = google_conversion.CLICK_KINDS
CLICK_WINDOW = google_conversion.CLICK_WINDOW
MAX_DESTINATIONS = 10  # per events:ingest request (§3b.3)
EVENT_SOURCES = Literal["WEB", "APP", "IN_STORE", "PHONE", "MESSAGE", "OTHER"]


class GoogleAdsSettings(base.DestinationSettings):
    """Settings of a `google_ads` destination."""

    type: Literal["google_ads"] = "google_ads"
    api: Literal["data_manager", "google_ads_api"] = "data_manager"
    customer_id: str  # the Google Ads account that owns the conversion actions
    login_customer_id: str | None = None  # the manager account, when access goes through one
    # incoming event name -> numeric conversion action id (of type UPLOAD_CLICKS)
    conversion_actions: dict[str, str] = Field(min_length=1)
    oauth: SecretStr
    token_url: str = "https://oauth2.googleapis.com/token"
    developer_token: SecretStr | None = None  # legacy API only; optional since its sunset
    quota_project: str | None = None  # sent as x-goog-user-project (need unconfirmed)
    validate_only: bool = False
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")  # when an event has none
    # eventSource of server-source events (browser events are WEB); must suit the action.
    server_event_source: EVENT_SOURCES = "WEB"
    # Off by default: Google has no IP matching for EEA/UK/Swiss users and the legacy
    # userIpAddress is closed to new adopters (§3b.1).
    send_ip_address: bool = False
    send_user_agent: bool = False
    # Legacy TOO_RECENT_EVENT: "retry after 6 hours" (the figure is unconfirmed).
    too_recent_retry_seconds: float = Field(default=6 * 3600, ge=0)
    # The conversion actions' click-through window (Google's maximum is 90 days): a click first
    # seen longer ago than this at upload time is not sent (Google: EXPIRED_EVENT).
    click_window_days: int = Field(default=90, ge=1, le=90)
    # Data Manager: ask requestStatus:retrieve this long after Google accepted a request
    # ("wait about 30 minutes"), then with growing waits until this deadline (up to 24 h).
    request_status_delay_seconds: float = Field(default=1800, ge=0)
    request_status_deadline_seconds: float = Field(default=25 * 3600, gt=0)

    @field_validator("customer_id", "login_customer_id")
    @classmethod
    def _account_id(cls, value: str | None) -> str | None:
        return account_id(value)

    @field_validator("conversion_actions")
    @classmethod
    def _action_ids(cls, value: dict[str, str]) -> dict[str, str]:
        for name, action in value.items():
            if not re.fullmatch(r"\d+", action):
                raise ValueError(f"{name}: must be a numeric conversion action id")
        return value

    @field_validator("oauth")
    @classmethod
    def _oauth_json(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() != UNSET_SECRET:  # unset: reported, never sent (settings)
            credentials(value)
        return value

    @model_validator(mode="after")
    def _no_events_mapping(self) -> GoogleAdsSettings:
        if self.events is not None:
            raise ValueError("google_ads maps events with conversion_actions, not events")
        return self

    @property
    def base_url(self) -> str:
        default = DATA_MANAGER_BASE if self.api == "data_manager" else GOOGLE_ADS_BASE
        return (self.api_base or default).rstrip("/")

    def mapped_name(self, event_name: str) -> str | None:
        """The conversion action id this event is sent to, or None; Segment's standard names
        count as ours (`Order Completed` is `Purchase`, platforms.STANDARD_EVENTS)."""
        if event_name in platforms.NEVER_SENT:
            return None
        ours = platforms.standard_name(event_name)
        found = self.conversion_actions.get(event_name)
        return found or (self.conversion_actions.get(ours) if ours else None)


def account_id(value: str | None) -> str | None:
    """A Google Ads account id as Google takes it (10 digits, dashes dropped), or None."""
    if value is None:
        return None
    digits = value.replace("-", "")
    if not re.fullmatch(r"\d{10}", digits):
        raise ValueError("must be a 10-digit Google Ads account id")
    return digits


def credentials(oauth: SecretStr) -> dict[str, str]:
    """The parsed `oauth` JSON; ValueError naming what is missing."""
    try:
        data = json.loads(oauth.get_secret_value())
    except ValueError:
        raise ValueError("must be JSON credentials (refresh token or service account)") from None
    if not isinstance(data, dict):
        raise ValueError("must be a JSON object")
    needed: tuple[str, ...]
    if data.get("type") == "service_account":
        needed = ("client_email", "private_key")
    else:
        needed = ("client_id", "client_secret", "refresh_token")
    missing = [key for key in needed if not isinstance(data.get(key), str) or not data[key]]
    if missing:
        raise ValueError(f"credentials lack {', '.join(missing)}")
    return {k: v for k, v in data.items() if isinstance(v, str)}


# The token endpoint's answers that no retry fixes: the credentials themselves are refused.
REFUSED_GRANTS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})

# ---------------------------------------------------------------- the adapter


class GoogleAds(base.Adapter):
    """Google Ads click conversions and enhanced conversions for leads."""

    type = "google_ads"
    settings_model = GoogleAdsSettings
    max_batch = 2000
    max_event_age = CLICK_WINDOW
    match_keys = ("email", "phone", "gclid", "gbraid", "wbraid")
    example_settings: ClassVar[Mapping[str, Any]] = {
        "name": "google",
        "type": "google_ads",
        "api": "data_manager",
        "customer_id": "1234567890",
        "conversion_actions": {"Lead": "111111111", "Purchase": "222222222"},
        # normally "env:GOOGLE_OAUTH_JSON"; written out here so that the entry validates
        "oauth": '{"client_id": "1234.apps.googleusercontent.com", "client_secret": "GOCSPX-x", '
        '"refresh_token": "1//0example"}',
    }

    settings: GoogleAdsSettings

    @property
    def test_mode(self) -> str | None:
        return "validate_only" if self.settings.validate_only else None

    def __init__(self, settings: GoogleAdsSettings) -> None:
        super().__init__(settings)
        # The upload time, for the click window (tests set a fixed one).
        self.clock: Callable[[], datetime] = google_conversion.utc_now

    def skip(self, event: Event, now: datetime) -> str | None:
        """Too old, or nothing Google could match the conversion with."""
        reason = super().skip(event, now)
        window = timedelta(days=self.settings.click_window_days)
        if (
            reason is None
            and google_conversion.usable_click(event, now, window) is None
            and google_conversion.identifiers(event) == (None, None)
            and (self.settings.api != "data_manager" or google_conversion.address(event) is None)
        ):
            reason = (
                f"no gclid, gbraid or wbraid from a click seen before the event and in the last "
                f"{window.days} days, and no hashed email, phone or address (or ad_user_data "
                "denied): Google Ads cannot match it"
            )
        return reason

    @property
    def follow_up_delay(self) -> float:
        return self.settings.request_status_delay_seconds

    @property
    def follow_up_deadline(self) -> float:
        return self.settings.request_status_deadline_seconds

    @property
    def needs_token(self) -> bool:
        return True

    def token_request(self) -> base.OutgoingRequest:
        """An OAuth2 token request: refresh-token grant, or a service account's signed JWT."""
        creds = credentials(self.settings.oauth)
        if creds.get("type") == "service_account":
            assertion = google_rpc.service_account_jwt(
                creds, SCOPES[self.settings.api], self.settings.token_url
            )
            form = {
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": assertion,
            }
            secrets: tuple[str, ...] = (assertion,)
        else:
            form = {
                "grant_type": "refresh_token",
                "client_id": creds["client_id"],
                "client_secret": creds["client_secret"],
                "refresh_token": creds["refresh_token"],
            }
            secrets = (creds["client_secret"], creds["refresh_token"])
        return base.OutgoingRequest(
            method="POST",
            url=self.settings.token_url,
            event_pks=(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            body=urllib.parse.urlencode(form).encode(),
            secrets=secrets,
        )

    def credential_refused(self, status: int, body: str) -> str | None:
        """The token endpoint refusing the refresh token or service-account key (`invalid_grant`:
        expired, revoked, key deleted), or the API refusing the access token (401
        UNAUTHENTICATED, after the worker fetched a fresh one)."""
        try:
            data = json.loads(body)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        if status in (400, 401) and data.get("error") in REFUSED_GRANTS:
            words = ": ".join(str(data[k]) for k in ("error", "error_description") if k in data)
            return f"Google refused the OAuth credentials: {words}"
        error = data.get("error")
        if status == 401 and isinstance(error, dict) and error.get("status") == "UNAUTHENTICATED":
            return f"Google refused the access token: {error.get('message', 'UNAUTHENTICATED')}"
        return None

    def read_token(self, response: base.Response) -> tuple[str, float]:
        """The access token and its lifetime; PermanentError/RetryableError with Google's words."""
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status == 200 and isinstance(data, dict) and data.get("access_token"):
            return str(data["access_token"]), float(data.get("expires_in", 3600))
        detail = ""
        if isinstance(data, dict):
            detail = ": ".join(str(data[k]) for k in ("error", "error_description") if k in data)
        message = f"token endpoint answered HTTP {response.status}{': ' + detail if detail else ''}"
        if response.status in (408, 429) or response.status >= 500:
            raise RetryableError(message, base.retry_after(response.headers))
        raise PermanentError(message)

    def build(
        self, events: Sequence[Event], token: str | None = None
    ) -> list[base.OutgoingRequest]:
        """One request for the legacy API; Data Manager: one per ten conversion actions."""
        now = self.clock()
        conversions = [(e.pk, google_conversion.conversion(self.settings, e, now)) for e in events]
        if self.settings.api == "google_ads_api":
            return [self._upload_request(conversions, token)]
        actions = list(dict.fromkeys(c.action_id for _, c in conversions))
        requests = []
        for start in range(0, len(actions), MAX_DESTINATIONS):
            group = set(actions[start : start + MAX_DESTINATIONS])
            part = [(pk, c) for pk, c in conversions if c.action_id in group]
            requests.append(self._ingest_request(part, token))
        return requests

    def interpret(
        self, request: base.OutgoingRequest, response: base.Response
    ) -> dict[str, base.Outcome]:
        """Success, fail-fast rejection, partial failure rows or an RPC error, per event."""
        pks = request.event_pks
        if response.status != 200:
            return google_rpc.rpc_error(pks, response)
        body = google_rpc.json_body(response)
        if self.settings.api == "google_ads_api":
            rows = (request.json or {}).get("conversions") or []
            return self._partial_failure(pks, rows, body)
        if self.settings.validate_only:
            outcome = base.Delivered("validateOnly: passed validation, nothing stored", test=True)
        elif body.get("requestId"):
            request_id = str(body["requestId"])
            detail = f"queued by Google, requestId {request_id}"
            outcome = base.Delivered(detail, follow_up=request_id)
        else:
            outcome = base.Delivered("queued by Google, no requestId to follow up")
        return dict.fromkeys(pks, outcome)

    def follow_up(
        self, request_id: str, events: Sequence[Event], token: str | None
    ) -> base.OutgoingRequest:
        """`GET requestStatus:retrieve?requestId=…` for an accepted ingest (§3b.9)."""
        pks = [e.pk for e in events]
        return google_rpc.status_request(
            self.settings.base_url, request_id, pks, self._headers(token), token
        )

    def quality_requests(
        self, token: str | None, request_ids: Sequence[str]
    ) -> list[base.OutgoingRequest]:
        """`requestStatus:retrieve` of recent accepted ingests: Google states a match-rate range
        for uploads with user data (Data Manager only)."""
        if self.settings.api != "data_manager":
            return []
        return [self.follow_up(request_id, (), token) for request_id in request_ids]

    def read_quality(
        self, request: base.OutgoingRequest, response: base.Response
    ) -> list[base.Verdict]:
        """The match-rate range per conversion action, under the event name mapped to it."""
        if response.status != 200:
            text = response.body[:300].decode("utf-8", "replace")
            fails = RetryableError if response.status >= 500 else PermanentError
            raise fails(f"requestStatus:retrieve refused: HTTP {response.status}: {text}")
        names = {action: name for name, action in self.settings.conversion_actions.items()}
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.url).query)
        asked = (query.get("requestId") or [""])[0]
        found = []
        for entry in google_rpc.json_body(response).get("requestStatusPerDestination") or []:
            rate = google_rpc.match_rate(entry) if isinstance(entry, dict) else None
            if rate is None:
                continue
            destination = entry.get("destination") or {}
            action = str(destination.get("productDestinationId") or destination.get("reference"))
            name = names.get(action, "")
            detail = f"conversion action {action}, request {asked}"
            found.append(base.Verdict(name, "match_rate_range", rate, detail))
        return found

    def interpret_follow_up(
        self, request: base.OutgoingRequest, response: base.Response, events: Sequence[Event]
    ) -> dict[str, base.Outcome]:
        """Google's status for each event's destination: done (delivered/failed) or not yet."""
        pks = request.event_pks
        status = response.status
        if status != 200:
            refused = google_rpc.rpc_error(pks, response)
            if status in (401, 408, 429) or status >= 500:
                return refused
            # INVALID_REQUEST_ID and the like: Google will never say; nothing to split or resend.
            return {pk: google_rpc.final_refusal(o) for pk, o in refused.items()}
        entries = google_rpc.json_body(response).get("requestStatusPerDestination") or []
        entries = [e for e in entries if isinstance(e, dict)]
        actions = {e.pk: self.settings.conversion_actions.get(e.name, "") for e in events}
        ours = Counter(actions.values())
        outcomes: dict[str, base.Outcome] = {}
        for pk in pks:
            action = actions.get(pk, "")
            entry = google_rpc.entry_for(entries, action)
            outcomes[pk] = google_rpc.request_status(entry, action, ours[action])
        return outcomes

    # ------------------------------------------------------------ Data Manager (§3b)

    def _ingest_request(
        self, conversions: list[tuple[str, google_conversion.Conversion]], token: str | None
    ) -> base.OutgoingRequest:
        settings = self.settings
        actions = list(dict.fromkeys(c.action_id for _, c in conversions))
        events = [google_conversion.ingest_event(c) for _, c in conversions]
        body: dict[str, Any] = {
            "destinations": [self._destination(a) for a in actions],
            "events": events,
        }
        if any("userData" in e for e in events):
            body["encoding"] = "HEX"  # our hashes are lowercase hex digests
        body["validateOnly"] = settings.validate_only
        headers = self._headers(token)
        return base.OutgoingRequest(
            method="POST",
            url=f"{settings.base_url}/events:ingest",
            event_pks=tuple(pk for pk, _ in conversions),
            headers=headers,
            json=body,
            secrets=(token,) if token else (),
        )

    def _headers(self, token: str | None) -> dict[str, str]:
        """What both APIs take: the OAuth2 bearer and, when set, the quota project."""
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if self.settings.quota_project:
            headers["x-goog-user-project"] = self.settings.quota_project
        return headers

    def _destination(self, action_id: str) -> dict[str, Any]:
        account = {"accountType": "GOOGLE_ADS", "accountId": self.settings.customer_id}
        destination: dict[str, Any] = {"reference": action_id, "operatingAccount": account}
        if self.settings.login_customer_id:
            login = {"accountType": "GOOGLE_ADS", "accountId": self.settings.login_customer_id}
            destination["loginAccount"] = login
        destination["productDestinationId"] = action_id
        return destination

    # ------------------------------------------------------------ legacy upload (§3)

    def _upload_request(
        self, conversions: list[tuple[str, google_conversion.Conversion]], token: str | None
    ) -> base.OutgoingRequest:
        settings = self.settings
        cid = settings.customer_id
        body: dict[str, Any] = {
            "conversions": [google_conversion.click_conversion(cid, c) for _, c in conversions],
            "partialFailure": True,
        }
        if settings.validate_only:
            body["validateOnly"] = True
        headers = self._headers(token)
        secrets = [token] if token else []
        if settings.developer_token:
            headers["developer-token"] = settings.developer_token.get_secret_value()
            secrets.append(headers["developer-token"])
        if settings.login_customer_id:
            headers["login-customer-id"] = settings.login_customer_id
        return base.OutgoingRequest(
            method="POST",
            url=f"{settings.base_url}/customers/{cid}:uploadClickConversions",
            event_pks=tuple(pk for pk, _ in conversions),
            headers=headers,
            json=body,
            secrets=tuple(secrets),
        )

    def _partial_failure(
        self, pks: Sequence[str], sent: Sequence[Any], body: dict[str, Any]
    ) -> dict[str, base.Outcome]:
        failure = body.get("partialFailureError") or {}
        by_index, general = google_rpc.errors_by_index(failure.get("details") or [])
        if failure and not by_index and not general:
            general = [(str(failure.get("message", "partial failure")), "")]
        results = body.get("results") or []
        outcomes: dict[str, base.Outcome] = {}
        for i, pk in enumerate(pks):
            errors = by_index.get(i, []) or (general if not google_rpc.row(results, i) else [])
            had_click = any(k in google_rpc.row(sent, i) for k in CLICK_KINDS)
            outcomes[pk] = self._row_outcome(errors, had_click, body.get("jobId"))
        return outcomes

    def _row_outcome(
        self, errors: list[tuple[str, str]], had_click: bool, job: Any
    ) -> base.Outcome:
        if not errors:
            if self.settings.validate_only:
                return base.Delivered("validateOnly: passed validation", test=True)
            return base.Delivered(f"uploaded, jobId {job}" if job else "uploaded")
        codes = {code for _, code in errors}
        reason = "; ".join(f"{code}: {message}" if code else message for message, code in errors)
        if codes == {"CLICK_NOT_FOUND"} and not had_click:
            # Enhanced conversions for leads: a lead that did not come from a Google ad (§3.9).
            return base.Delivered(f"not matched to a Google Ads click: {reason}")
        if codes == {"TOO_RECENT_EVENT"}:
            return base.Retry(reason, after=self.settings.too_recent_retry_seconds)
        if "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE" in codes:
            reason += (
                ' (this account may no longer use uploadClickConversions: set api = "data_manager")'
            )
        return base.Rejected(reason)
