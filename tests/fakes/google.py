"""A fake of Google's OAuth2 token endpoint, Data Manager `events:ingest` and Google Ads
`uploadClickConversions` (destinations.md §3, §3b; checklist §3b.13), on one local server.

    POST /token                                      refresh-token and JWT-bearer grants
    POST /v1/events:ingest                           fail-fast validation, adjust-on-transactionId
    GET  /v1/requestStatus:retrieve?requestId=…      PROCESSING for the first calls, then the
                                                     outcome per destination (error counts)
    POST /v26/customers/{cid}:uploadClickConversions partial failure per row

Point the adapter at it with `api_base = fake.url + "/v1"` (or `+ "/v26"`) and
`token_url = fake.url + "/token"`. Canned failures: `fake.script(google.unauthenticated())`,
`google.unavailable()`, `google.exhausted(retry_after=30)`, `google.daily_quota_spent()`, ...

Google's rules on time, enforced as Google does (destinations.md §3.7, §3b.6, §6), for the
clicks the test declares with `fake.click(value, at)` (when the ad was clicked; undeclared click
ids are taken as valid clicks of unknown time):

* a conversion dated before its click: legacy `CONVERSION_PRECEDES_EVENT`, Data Manager
  `PROCESSING_ERROR_REASON_INVALID_EVENT` in the request status;
* a click older than the click window (90 days) at upload: `EXPIRED_EVENT` /
  `PROCESSING_ERROR_REASON_EVENT_TOO_OLD`;
* a click less than 6 hours old (legacy): `TOO_RECENT_EVENT`;
* an event time later than now: Data Manager `EVENT_TIME_INVALID` (fail-fast), legacy
  `CONVERSION_DATE_TIME_IN_FUTURE` (unconfirmed name; the rule is confirmed, §6);
* `daily_requests`: ingest/upload requests allowed per quota day (midnight Pacific), then
  429 `RESOURCE_EXHAUSTED` until the day changes on `fake.clock`;
* an access token older than its lifetime (`expires_in`, on `fake.clock`) and every token issued
  before `expire_tokens()` answer 401 `UNAUTHENTICATED`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

from tests.fakes.server import FakeServer, Received, Reply

DATAMANAGER = "https://www.googleapis.com/auth/datamanager"
ADWORDS = "https://www.googleapis.com/auth/adwords"
ADS_FAILURE = "type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure"
HEX = re.compile(r"^[0-9a-fA-F]{64}$")
LOWER_HEX = re.compile(r"^[0-9a-f]{64}$")
DIGITS = re.compile(r"^\d+$")
LEGACY_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")
RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3}|\.\d{6}|\.\d{9})?(Z|[+-]\d{2}:\d{2})$"
)
EVENT_SOURCES = {"WEB", "APP", "IN_STORE", "PHONE", "MESSAGE", "OTHER"}
CONSENT_VALUES = {"CONSENT_GRANTED", "CONSENT_DENIED", "CONSENT_STATUS_UNSPECIFIED"}
REQUEST_KEYS = {"destinations", "events", "consent", "validateOnly", "encoding", "encryptionInfo"}
DESTINATION_KEYS = {
    "reference",
    "operatingAccount",
    "loginAccount",
    "linkedAccount",
    "productDestinationId",
}
EVENT_KEYS = {
    "destinationReferences",
    "transactionId",
    "eventTimestamp",
    "lastUpdatedTimestamp",
    "eventSource",
    "conversionValue",
    "currency",
    "adIdentifiers",
    "userData",
    "consent",
    "customVariables",
    "cartData",
    "eventDeviceInfo",
    "userProperties",
}
AD_ID_KEYS = {"gclid", "gbraid", "wbraid", "sessionAttributes", "landingPageDeviceInfo"}
CONVERSION_KEYS = {
    "conversionAction",
    "conversionDateTime",
    "gclid",
    "gbraid",
    "wbraid",
    "conversionValue",
    "currencyCode",
    "orderId",
    "userIdentifiers",
    "consent",
    "conversionEnvironment",
    "customVariables",
    "cartData",
    "userIpAddress",
}
UNAUTHENTICATED_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
    "or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
CLICK_WINDOW = timedelta(days=90)
TOKEN_LIFETIME = timedelta(seconds=3599)
TOO_RECENT = timedelta(hours=6)
QUOTA_DAY = ZoneInfo("America/Los_Angeles")
MATCH_RATE_RANGES = (
    "MATCH_RATE_RANGE_LESS_THAN_20",
    "MATCH_RATE_RANGE_20_TO_30",
    "MATCH_RATE_RANGE_31_TO_40",
    "MATCH_RATE_RANGE_41_TO_50",
    "MATCH_RATE_RANGE_51_TO_60",
    "MATCH_RATE_RANGE_61_TO_70",
    "MATCH_RATE_RANGE_71_TO_80",
    "MATCH_RATE_RANGE_81_TO_90",
    "MATCH_RATE_RANGE_91_TO_100",
)
NOT_ALLOWLISTED_MESSAGE = (
    "New integrations for uploading click conversions should use the Data Manager API. Usage of "
    "ConversionUploadService.UploadClickConversions is limited to existing users."
)


# ---------------------------------------------------------------- canned error replies


def status_error(
    code: int,
    status: str,
    message: str,
    *details: Mapping[str, Any],
    headers: Mapping[str, str] = {},
) -> Reply:
    """A google.rpc.Status error reply."""
    body = {"error": {"code": code, "message": message, "status": status, "details": list(details)}}
    return Reply(code, body, headers)


def error_info(reason: str, **metadata: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": metadata,
    }


def request_info() -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RequestInfo", "requestId": uuid.uuid4().hex}


def unauthenticated(reason: str = "ACCESS_TOKEN_EXPIRED") -> Reply:
    """401 UNAUTHENTICATED, as Google answers a bad, expired or revoked access token."""
    return status_error(401, "UNAUTHENTICATED", UNAUTHENTICATED_MESSAGE, error_info(reason))


def unavailable(code: int = 503) -> Reply:
    status, message = {
        500: ("INTERNAL", "Internal error encountered."),
        503: ("UNAVAILABLE", "The service is currently unavailable."),
        504: ("DEADLINE_EXCEEDED", "The request deadline was exceeded."),
    }[code]
    return status_error(code, status, message, request_info())


def exhausted(
    retry_after: int | None = 30, quota: str = "IngestRequestsPerMinutePerProject"
) -> Reply:
    """429 RESOURCE_EXHAUSTED with the quota's name in ErrorInfo.metadata.quota_limit."""
    message = f"Quota exceeded for quota metric '{quota}'."
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    info = error_info("RATE_LIMIT_EXCEEDED", quota_limit=quota)
    return status_error(429, "RESOURCE_EXHAUSTED", message, info, headers=headers)


def daily_quota_spent(legacy: bool = False) -> Reply:
    """429 RESOURCE_EXHAUSTED for a spent per-day quota (it resets at midnight Pacific).

    Data Manager names the quota; the Google Ads API answers quotaError RESOURCE_EXHAUSTED.
    """
    if legacy:
        failure = {
            "@type": ADS_FAILURE,
            "errors": [
                {
                    "errorCode": {"quotaError": "RESOURCE_EXHAUSTED"},
                    "message": "Too many requests. Retry in 43200 seconds.",
                }
            ],
            "requestId": uuid.uuid4().hex,
        }
        return status_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted.", failure)
    quota = "IngestRequestsPerDayPerProject"
    message = f"Quota exceeded for quota metric '{quota}'."
    info = error_info("RATE_LIMIT_EXCEEDED", quota_limit=quota)
    return status_error(429, "RESOURCE_EXHAUSTED", message, info)


def permission_denied(reason: str = "NOT_ALLOWLISTED") -> Reply:
    message = "The caller does not have permission"
    return status_error(403, "PERMISSION_DENIED", message, error_info(reason), request_info())


def invalid_argument(violations: list[tuple[str, str, str]], reason: str | None = None) -> Reply:
    """400 INVALID_ARGUMENT with BadRequest.fieldViolations of (field, description, reason)."""
    details: list[dict[str, Any]] = []
    if reason or violations:
        details.append(error_info(reason or violations[0][2]))
    details.append(
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [
                {"field": f, "description": d, "reason": r} for f, d, r in violations
            ],
        }
    )
    details.append(request_info())
    return status_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.", *details)


# ---------------------------------------------------------------- the fake


class FakeGoogle(FakeServer):
    """Google's token endpoint, Data Manager ingest and the legacy click-conversion upload."""

    def __init__(self) -> None:
        super().__init__()
        # refresh token -> (client_id, client_secret, scopes)
        self.refresh_tokens: dict[str, tuple[str, str, set[str]]] = {}
        self.service_accounts: dict[str, Any] = {}  # client_email -> public key
        self.tokens: dict[str, set[str]] = {}  # access token -> scopes
        self.issued_at: dict[str, datetime] = {}  # access token -> when (fake.clock)
        self.ingested: dict[tuple[str, str], dict[str, Any]] = {}  # (action, transactionId)
        self.adjustments = 0
        self.uploaded: list[dict[str, Any]] = []
        self.status_calls: dict[str, int] = {}
        self.processing_calls = 1
        self.allowlisted = True  # legacy: whether the customer may still upload click conversions
        self.row_errors: dict[str, str] = {}  # gclid -> conversionUploadError to answer with
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.clicks: dict[str, datetime] = {}  # click id -> when the ad was clicked
        self.daily_requests: int | None = None  # ingest/upload requests per quota day
        self.used: dict[str, int] = {}  # quota day -> requests counted
        self.match_rate: str | None = None  # uploadMatchRateRange to report for user data
        # requestId -> one status per destination of the request, in its order
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self._issued = 0

    # ------------------------------------------------------------ set-up helpers

    def add_refresh_token(
        self, client_id: str, client_secret: str, refresh_token: str, *scopes: str
    ) -> str:
        """Register OAuth client credentials; returns the JSON an operator would configure."""
        self.refresh_tokens[refresh_token] = (
            client_id,
            client_secret,
            set(scopes or {DATAMANAGER}),
        )
        creds = {"client_id": client_id, "client_secret": client_secret}
        return json.dumps({**creds, "refresh_token": refresh_token})

    def add_service_account(self, client_email: str, public_key: Any) -> None:
        self.service_accounts[client_email] = public_key

    def issue_token(self, *scopes: str) -> str:
        self._issued += 1
        token = f"ya29.fake-{self._issued}"
        self.tokens[token] = set(scopes)
        self.issued_at[token] = self.clock()
        return token

    def expire_tokens(self) -> None:
        """Every access token issued so far has expired: each answers 401 from now on."""
        self.tokens.clear()

    def click(self, value: str, at: datetime) -> None:
        """Declare an ad click (gclid, gbraid or wbraid) and when it happened."""
        self.clicks[value] = at

    def status_bodies(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.requests if r.path.endswith("requestStatus:retrieve")]

    def ingest_bodies(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.requests if r.path.endswith("events:ingest")]

    # ------------------------------------------------------------ routing

    def handle(self, request: Received) -> Reply:
        path = request.path
        if request.method == "POST" and path == "/token":
            return self._token(request)
        if request.method == "POST" and path == "/v1/events:ingest":
            return (
                self._authorised(request, DATAMANAGER)
                or self._quota(legacy=False)
                or self._ingest(request.json())
            )
        if request.method == "GET" and path == "/v1/requestStatus:retrieve":
            return self._authorised(request, DATAMANAGER) or self._status(request)
        found = re.fullmatch(r"/v2\d/customers/(\d+):uploadClickConversions", path)
        if request.method == "POST" and found:
            return (
                self._authorised(request, ADWORDS)
                or self._quota(legacy=True)
                or self._upload(found.group(1), request)
            )
        return status_error(404, "NOT_FOUND", f"Method not found: {request.method} {path}")

    def _authorised(self, request: Received, scope: str) -> Reply | None:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return unauthenticated("CREDENTIALS_MISSING")
        bearer = header.removeprefix("Bearer ")
        scopes = self.tokens.get(bearer)
        issued = self.issued_at.get(bearer)
        if issued is not None and self.clock() - issued > TOKEN_LIFETIME:
            scopes = None  # expired: Google answers 401 ACCESS_TOKEN_EXPIRED
        if scopes is None:
            return unauthenticated()
        if scope not in scopes:
            message = "Request had insufficient authentication scopes."
            return status_error(
                403, "PERMISSION_DENIED", message, error_info("ACCESS_TOKEN_SCOPE_INSUFFICIENT")
            )
        return None

    def _quota(self, *, legacy: bool) -> Reply | None:
        if self.daily_requests is None:
            return None
        day = self.clock().astimezone(QUOTA_DAY).date().isoformat()
        self.used[day] = self.used.get(day, 0) + 1
        if self.used[day] > self.daily_requests:
            return daily_quota_spent(legacy)
        return None

    # ------------------------------------------------------------ OAuth2

    def _token(self, request: Received) -> Reply:
        if request.headers.get("content-type") != "application/x-www-form-urlencoded":
            return Reply(400, {"error": "invalid_request", "error_description": "Bad Request"})
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        grant = form.get("grant_type")
        if grant == "refresh_token":
            known = self.refresh_tokens.get(form.get("refresh_token", ""))
            if known is None:
                return Reply(
                    400,
                    {
                        "error": "invalid_grant",
                        "error_description": "Token has been expired or revoked.",
                    },
                )
            if (form.get("client_id"), form.get("client_secret")) != known[:2]:
                body = {"error": "invalid_client", "error_description": "Unauthorized"}
                return Reply(401, body)
            scopes = known[2]
        elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            signed = self._jwt_scopes(form.get("assertion", ""))
            if signed is None:
                body = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
                return Reply(400, body)
            scopes = signed
        else:
            return Reply(
                400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}
            )
        token = self.issue_token(*scopes)
        lifetime = int(TOKEN_LIFETIME.total_seconds())
        answer = {"access_token": token, "expires_in": lifetime, "scope": " ".join(sorted(scopes))}
        return Reply(200, {**answer, "token_type": "Bearer"})

    def _jwt_scopes(self, assertion: str) -> set[str] | None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        try:
            head, claims_part, signature = assertion.split(".")
            claims = json.loads(_unb64(claims_part))
            key = self.service_accounts[claims["iss"]]
            key.verify(
                _unb64(signature),
                f"{head}.{claims_part}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (ValueError, KeyError, InvalidSignature):
            return None
        if not claims.get("aud", "").endswith("/token") or claims.get("exp", 0) <= claims.get(
            "iat", 0
        ):
            return None
        return set(str(claims.get("scope", "")).split())

    # ------------------------------------------------------------ Data Manager (§3b)

    def _ingest(self, body: dict[str, Any]) -> Reply:
        violations = ingest_violations(body) + self._future_violations(body)
        if violations:
            return invalid_argument(violations)
        if body.get("validateOnly"):
            return Reply(200, {})
        actions = {d.get("reference"): d["productDestinationId"] for d in body["destinations"]}
        statuses = {d.get("reference"): _destination_status(d) for d in body["destinations"]}
        for event in body["events"]:
            refs = event.get("destinationReferences") or list(actions)
            problem = self._click_problem(event)
            for ref in refs:
                status = statuses[ref]
                status["records"] += 1
                status["user_data"] = status["user_data"] or "userData" in event
                if problem:
                    status["errors"][problem] = status["errors"].get(problem, 0) + 1
                    continue
                key = (actions[ref], event.get("transactionId", uuid.uuid4().hex))
                if key in self.ingested:
                    self.adjustments += 1  # same transactionId: an adjustment, not a 2nd conversion
                    stored = self.ingested[key]
                    stored.update(
                        {k: event[k] for k in ("conversionValue", "currency") if k in event}
                    )
                else:
                    self.ingested[key] = dict(event)
        request_id = str(uuid.uuid4())
        self.status_calls[request_id] = 0
        self.statuses[request_id] = list(statuses.values())
        return Reply(200, {"requestId": request_id})

    def _future_violations(self, body: dict[str, Any]) -> list[tuple[str, str, str]]:
        now = self.clock()
        return [
            (f"events[{n}].event_timestamp", "Event time is in the future.", "EVENT_TIME_INVALID")
            for n, event in enumerate(body.get("events") or [])
            if _instant(str(event.get("eventTimestamp", ""))) > now
        ]

    def _click_problem(self, event: dict[str, Any]) -> str | None:
        """The asynchronous processing error a declared click gives this event, if any."""
        ad_ids = event.get("adIdentifiers") or {}
        clicked = next((self.clicks[v] for k, v in ad_ids.items() if v in self.clicks), None)
        if clicked is None:
            return None
        if _instant(event["eventTimestamp"]) < clicked:
            return "PROCESSING_ERROR_REASON_INVALID_EVENT"  # Data Manager has no PRECEDES
        if self.clock() - clicked > CLICK_WINDOW:
            return "PROCESSING_ERROR_REASON_EVENT_TOO_OLD"
        return None

    def _status(self, request: Received) -> Reply:
        request_id = (request.query.get("requestId") or [""])[0]
        if request_id not in self.status_calls:
            message = "The request ID is invalid."
            return status_error(400, "INVALID_ARGUMENT", message, error_info("INVALID_REQUEST_ID"))
        self.status_calls[request_id] += 1
        processing = self.status_calls[request_id] <= self.processing_calls
        entries = [
            {"destination": s["destination"], "requestStatus": "PROCESSING"}
            if processing
            else self._final(s)
            for s in self.statuses[request_id]
        ]
        return Reply(200, {"requestStatusPerDestination": entries})

    def _final(self, status: dict[str, Any]) -> dict[str, Any]:
        failed = sum(status["errors"].values())
        state = (
            "SUCCESS"
            if not failed
            else "FAILED"
            if failed >= status["records"]
            else "PARTIAL_SUCCESS"
        )
        ingestion: dict[str, Any] = {"recordCount": str(status["records"])}
        if self.match_rate and status["user_data"]:
            ingestion["uploadMatchRateRange"] = self.match_rate
        entry: dict[str, Any] = {
            "destination": status["destination"],
            "requestStatus": state,
            "eventsIngestionStatus": ingestion,
        }
        if failed:
            counts = [{"recordCount": str(n), "reason": r} for r, n in status["errors"].items()]
            entry["errorInfo"] = {"errorCounts": counts}
        return entry

    # ------------------------------------------------------------ legacy upload (§3)

    def _upload(self, cid: str, request: Received) -> Reply:
        body = request.json()
        conversions = body.get("conversions") or []
        if not body.get("partialFailure"):
            return _ads_rpc_error(
                "conversionUploadError",
                "PARTIAL_FAILURE_NOT_ENABLED",
                "partialFailure must be true.",
            )
        if not 1 <= len(conversions) <= 2000:
            return _ads_rpc_error(
                "conversionUploadError",
                "TOO_MANY_CONVERSIONS_IN_REQUEST",
                "Upload fewer than 2001 events.",
            )
        errors: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        for i, row in enumerate(conversions):
            problem = self._row_problem(cid, row)
            if problem:
                errors.append(_row_error(i, *problem))
                results.append({})
                continue
            results.append(
                {
                    k: row[k]
                    for k in ("gclid", "gbraid", "wbraid", "conversionAction", "conversionDateTime")
                    if k in row
                }
            )
            if not body.get("validateOnly"):
                self.uploaded.append(row)
        answer: dict[str, Any] = {}
        if errors:
            first = errors[0]["message"]
            index = errors[0]["location"]["fieldPathElements"][0]["index"]
            answer["partialFailureError"] = {
                "code": 3,
                "message": f"{first}, at conversions[{index}]",
                "details": [
                    {"@type": ADS_FAILURE, "errors": errors, "requestId": uuid.uuid4().hex}
                ],
            }
        if not body.get("validateOnly"):
            answer["results"] = results
            answer["jobId"] = "3456789012"
        return Reply(200, answer)

    def _row_problem(self, cid: str, row: dict[str, Any]) -> tuple[str, str, str] | None:
        """(error family, code, message) for the first rule this row breaks."""
        if not self.allowlisted:
            return (
                "notAllowlistedError",
                "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE",
                NOT_ALLOWLISTED_MESSAGE,
            )
        unknown = set(row) - CONVERSION_KEYS
        if unknown:
            return ("fieldError", "UNRECOGNIZED_FIELD", f"Unknown field: {sorted(unknown)[0]}")
        if not re.fullmatch(
            rf"customers/{cid}/conversionActions/\d+", str(row.get("conversionAction"))
        ):
            return (
                "conversionUploadError",
                "INVALID_CONVERSION_ACTION",
                "The conversion action is invalid.",
            )
        if not LEGACY_TIME.match(str(row.get("conversionDateTime", ""))):
            return (
                "dateError",
                "INVALID_FIELD_VALUES_IN_DATE_TIME",
                "The field values in the date time are invalid.",
            )
        clicks = [k for k in ("gclid", "gbraid", "wbraid") if row.get(k)]
        if len(clicks) > 1:
            return (
                "conversionUploadError",
                "GBRAID_WBRAID_BOTH_SET",
                "gclid, gbraid and wbraid are mutually exclusive.",
            )
        ids = row.get("userIdentifiers") or []
        if not clicks and not ids:
            return ("conversionUploadError", "CLICK_NOT_FOUND", "The click could not be found.")
        if len(ids) > 5:
            return ("collectionSizeError", "TOO_MANY", "Too many user identifiers.")
        for ident in ids:
            if set(ident) - {"hashedEmail", "hashedPhoneNumber", "userIdentifierSource"} or not all(
                LOWER_HEX.match(v) for k, v in ident.items() if k != "userIdentifierSource"
            ):
                return (
                    "conversionUploadError",
                    "INVALID_SHA256_FORMAT",
                    "The SHA256 encoded value is malformed.",
                )
        if "currencyCode" in row and not re.fullmatch(r"[A-Z]{3}", str(row["currencyCode"])):
            return (
                "conversionUploadError",
                "INVALID_CURRENCY_CODE",
                "The currency code is invalid.",
            )
        consent = row.get("consent") or {}
        if set(consent) - {"adUserData"} or consent.get("adUserData", "GRANTED") not in (
            "GRANTED",
            "DENIED",
        ):
            return ("fieldError", "INVALID_VALUE", "Invalid consent.")
        code = self.row_errors.get(str(row.get("gclid")))
        if code:
            return ("conversionUploadError", code, f"Scripted {code}.")
        timing = self._row_timing(row)
        if timing:
            return ("conversionUploadError", *timing)
        if any(
            u.get("gclid") == row.get("gclid")
            and u["conversionDateTime"] == row["conversionDateTime"]
            for u in self.uploaded
            if row.get("gclid")
        ):
            return (
                "conversionUploadError",
                "CLICK_CONVERSION_ALREADY_EXISTS",
                "This click conversion already exists.",
            )
        return None

    def _row_timing(self, row: dict[str, Any]) -> tuple[str, str] | None:
        """(code, message) of Google's time rules for this row (§3.7, ConversionUploadError)."""
        now = self.clock()
        converted = datetime.strptime(row["conversionDateTime"], "%Y-%m-%d %H:%M:%S%z")
        if converted > now:
            return ("CONVERSION_DATE_TIME_IN_FUTURE", "The conversion date time is in the future.")
        value = next((row[k] for k in ("gclid", "gbraid", "wbraid") if row.get(k)), None)
        clicked = self.clicks.get(str(value)) if value else None
        if clicked is None:
            return None
        if converted < clicked:
            return (
                "CONVERSION_PRECEDES_EVENT",
                "The conversion date time precedes the click.",
            )
        if now - clicked > CLICK_WINDOW:
            return (
                "EXPIRED_EVENT",
                "The click associated with the given identifier is older than the conversion "
                "action's click-through window.",
            )
        if now - clicked < TOO_RECENT:
            return (
                "TOO_RECENT_EVENT",
                "The click associated with the given identifier or iOS URL parameter occurred "
                "less than 6 hours ago, please retry after 6 hours have passed.",
            )
        return None


def _destination_status(destination: dict[str, Any]) -> dict[str, Any]:
    return {"destination": destination, "records": 0, "errors": {}, "user_data": False}


def _instant(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def ingest_violations(body: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The checks of §3b.13 item 3, as (field, description, reason) fail-fast violations."""
    problems: list[tuple[str, str, str]] = []
    unknown = set(body) - REQUEST_KEYS
    if unknown:
        problems.append((sorted(unknown)[0], "Unknown field.", "INVALID_FORMAT"))
    destinations = body.get("destinations") or []
    if not 1 <= len(destinations) <= 10:
        problems.append(("destinations", "Between 1 and 10 destinations.", "TOO_MANY_DESTINATIONS"))
    references = [d.get("reference") for d in destinations]
    if len(set(references)) != len(references):
        problems.append(("destinations", "Duplicate reference.", "DUPLICATE_DESTINATION_REFERENCE"))
    for n, dest in enumerate(destinations):
        problems += _destination_violations(f"destinations[{n}]", dest)
    events = body.get("events") or []
    if not 1 <= len(events) <= 2000:
        problems.append(("events", "Between 1 and 2000 events.", "TOO_MANY_EVENTS"))
    has_user_data = False
    for n, event in enumerate(events):
        problems += _event_violations(f"events[{n}]", event, set(references))
        has_user_data = has_user_data or "userData" in event
    encoding = body.get("encoding")
    if has_user_data and encoding not in ("HEX", "BASE64"):
        problems.append(
            ("encoding", "Encoding is required with user data.", "REQUIRED_FIELD_MISSING")
        )
    for n, event in enumerate(events):
        for m, ident in enumerate((event.get("userData") or {}).get("userIdentifiers") or []):
            for key, value in _hashed_values(ident):
                if not _encoded_ok(value, encoding):
                    where = f"events[{n}].user_data.user_identifiers[{m}].{key}"
                    reason = (
                        "INVALID_HEX_ENCODING" if encoding == "HEX" else "INVALID_BASE64_ENCODING"
                    )
                    problems.append((where, "The SHA256 encoded value is malformed.", reason))
    if "consent" in body:
        problems += _consent_violations("consent", body["consent"])
    return problems


def _destination_violations(where: str, dest: dict[str, Any]) -> list[tuple[str, str, str]]:
    problems = []
    if set(dest) - DESTINATION_KEYS:
        problems.append((where, "Unknown field.", "INVALID_FORMAT"))
    for key in ("operatingAccount", "loginAccount"):
        account = dest.get(key)
        if account is None and key == "loginAccount":
            continue
        if not isinstance(account, dict) or account.get("accountType") != "GOOGLE_ADS":
            problems.append(
                (
                    f"{where}.{key}",
                    "Account type must be GOOGLE_ADS.",
                    "DESTINATION_ACCOUNT_TYPE_MISMATCH",
                )
            )
        elif not DIGITS.match(str(account.get("accountId", ""))):
            problems.append(
                (f"{where}.{key}.account_id", "Invalid account id.", "INVALID_DESTINATION")
            )
    if not DIGITS.match(str(dest.get("productDestinationId", ""))):
        problems.append(
            (
                f"{where}.product_destination_id",
                "Invalid conversion action id.",
                "INVALID_CONVERSION_ACTION_ID",
            )
        )
    return problems


def _event_violations(
    where: str, event: dict[str, Any], references: set[Any]
) -> list[tuple[str, str, str]]:
    problems: list[tuple[str, str, str]] = []
    unknown = set(event) - EVENT_KEYS
    if unknown:
        problems.append((f"{where}.{sorted(unknown)[0]}", "Unknown field.", "INVALID_FORMAT"))
    for ref in event.get("destinationReferences") or []:
        if ref not in references:
            problems.append(
                (
                    f"{where}.destination_references",
                    "Unknown destination reference.",
                    "INVALID_DESTINATION",
                )
            )
    stamp = str(event.get("eventTimestamp", ""))
    if not RFC3339.match(stamp) or not _parses(stamp):
        problems.append((f"{where}.event_timestamp", "Invalid timestamp.", "EVENT_TIME_INVALID"))
    if event.get("eventSource") not in EVENT_SOURCES:
        problems.append(
            (f"{where}.event_source", "Event source is required.", "REQUIRED_FIELD_MISSING")
        )
    ad_ids = event.get("adIdentifiers") or {}
    if set(ad_ids) - AD_ID_KEYS:
        problems.append((f"{where}.ad_identifiers", "Unknown field.", "INVALID_FORMAT"))
    clicks = [k for k in ("gclid", "gbraid", "wbraid") if ad_ids.get(k)]
    if not clicks and not event.get("userData"):
        problems.append((where, "No identifiers provided.", "NO_IDENTIFIERS_PROVIDED"))
    if len(clicks) > 1:  # Google's own rule here is unconfirmed; the adapter promises one
        problems.append((f"{where}.ad_identifiers", "Only one click id.", "INVALID_EVENT"))
    identifiers = (event.get("userData") or {}).get("userIdentifiers") or []
    if "userData" in event and not identifiers:
        problems.append((f"{where}.user_data", "No user identifiers.", "REQUIRED_FIELD_MISSING"))
    if len(identifiers) > 10:
        problems.append(
            (f"{where}.user_data", "Too many user identifiers.", "TOO_MANY_USER_IDENTIFIERS")
        )
    for m, ident in enumerate(identifiers):
        if len(ident) != 1 or next(iter(ident)) not in ("emailAddress", "phoneNumber", "address"):
            problems.append(
                (
                    f"{where}.user_data.user_identifiers[{m}]",
                    "Exactly one identifier.",
                    "INVALID_FORMAT",
                )
            )
        elif "address" in ident and set(ident["address"]) != {
            "givenName",
            "familyName",
            "regionCode",
            "postalCode",
        }:
            problems.append(
                (
                    f"{where}.user_data.user_identifiers[{m}].address",
                    "Incomplete address.",
                    "REQUIRED_FIELD_MISSING",
                )
            )
    if "currency" in event and not re.fullmatch(r"[A-Za-z]{3}", str(event["currency"])):
        problems.append((f"{where}.currency", "Invalid currency code.", "INVALID_CURRENCY_CODE"))
    if "conversionValue" in event and not isinstance(event["conversionValue"], int | float):
        problems.append((f"{where}.conversion_value", "Invalid number.", "INVALID_NUMBER_FORMAT"))
    if "consent" in event:
        problems += _consent_violations(f"{where}.consent", event["consent"])
    return problems


def _consent_violations(where: str, consent: Any) -> list[tuple[str, str, str]]:
    if not isinstance(consent, dict) or set(consent) - {"adUserData", "adPersonalization"}:
        return [(where, "Unknown consent field.", "INVALID_FORMAT")]
    bad = [k for k, v in consent.items() if v not in CONSENT_VALUES]
    return [(f"{where}.{k}", "Invalid consent status.", "INVALID_ENUM_VALUE") for k in bad]


def _hashed_values(ident: dict[str, Any]) -> list[tuple[str, str]]:
    if "address" in ident:
        address = ident["address"] or {}
        return [(k, str(address.get(k, ""))) for k in ("givenName", "familyName")]
    return [(k, str(v)) for k, v in ident.items()]


def _encoded_ok(value: str, encoding: Any) -> bool:
    if encoding == "HEX":
        return bool(HEX.match(value))
    try:
        return len(value) == 44 and len(base64.b64decode(value, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def _parses(stamp: str) -> bool:
    try:
        datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _row_error(index: int, family: str, code: str, message: str) -> dict[str, Any]:
    return {
        "errorCode": {family: code},
        "message": message,
        "location": {"fieldPathElements": [{"fieldName": "conversions", "index": index}]},
    }


def _ads_rpc_error(family: str, code: str, message: str) -> Reply:
    failure = {
        "@type": ADS_FAILURE,
        "errors": [{"errorCode": {family: code}, "message": message}],
        "requestId": uuid.uuid4().hex,
    }
    return status_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.", failure)


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
