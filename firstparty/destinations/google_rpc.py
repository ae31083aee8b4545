"""Google's answers and sign-in: RPC error bodies and Data Manager request statuses mapped to
outcomes, the quota day, service-account JWTs.

Shared by both Google Ads APIs (`google_ads`); kept apart so the adapter reads as the request
it builds.
"""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from firstparty.destinations import base
from firstparty.errors import PermanentError

# 400 reasons about the account or the destination: no event of the request can pass.
CONFIG_REASONS = frozenset(
    {
        "INVALID_DESTINATION",
        "DESTINATION_ACCOUNT_TYPE_MISMATCH",
        "INVALID_CONVERSION_ACTION_ID",
        "INVALID_CONVERSION_ACTION_TYPE",
        "OPERATING_ACCOUNT_LOGIN_ACCOUNT_MISMATCH",
        "TERMS_AND_CONDITIONS_NOT_SIGNED",
        "DESTINATION_ACCOUNT_NOT_ENABLED_ENHANCED_CONVERSIONS_FOR_LEADS",
        "DESTINATION_ACCOUNT_ENHANCED_CONVERSIONS_TERMS_NOT_SIGNED",
        "DESTINATION_ACCOUNT_DATA_POLICY_PROHIBITS_ENHANCED_CONVERSIONS",
        "NOT_ALLOWLISTED",
        "EU_POLITICAL_ADVERTISING_DECLARATION_REQUIRED",
    }
)

INDEX = re.compile(r"(?:events|conversions)\[(\d+)\]")
# Google's quota day ends at midnight Pacific time (Google Ads API "Quotas" / "Rate Sheet";
# the same day as Search Ads 360 and Google Play quotas): a spent daily quota waits for it.
QUOTA_DAY = ZoneInfo("America/Los_Angeles")
DAILY_QUOTA = re.compile(r"per ?day|daily", re.IGNORECASE)


def rpc_error(pks: Sequence[str], response: base.Response) -> dict[str, base.Outcome]:
    """Outcomes for a google.rpc.Status answer (any non-200), per event."""
    error = json_body(response).get("error")
    error = error if isinstance(error, dict) else {}
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    reason = _describe(response.status, error, details)
    status = response.status
    if status in (408, 429) or status >= 500:
        after = base.retry_after(response.headers)
        if status == 429 and daily_quota(details):
            after = max(after or 0.0, until_quota_reset(datetime.now(UTC)))
            reason = f"daily quota spent, parked until it resets (midnight Pacific): {reason}"
        elif after is None:
            after = _retry_delay(details)
        return dict.fromkeys(pks, base.Retry(reason, after=after))
    by_index, _ = errors_by_index(details)
    offending = {i for i in by_index if i < len(pks)}
    if status != 400 or _reasons(details) & CONFIG_REASONS:
        return dict.fromkeys(pks, base.Rejected(reason))
    if not offending:
        return base.batch_refused(pks, reason, None)
    # Fail-fast: nothing was stored; set the offending events aside, resend the others now.
    others = base.Retry(f"resent without the rejected event(s) of the same request: {reason}", 0.0)
    outcomes: dict[str, base.Outcome] = {}
    for i, pk in enumerate(pks):
        if i in offending:
            found = "; ".join(f"{code}: {msg}" if code else msg for msg, code in by_index[i])
            outcomes[pk] = base.Rejected(f"{found} ({reason})")
        else:
            outcomes[pk] = others
    return outcomes


def daily_quota(details: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a RESOURCE_EXHAUSTED answer says a per-day quota is spent (not a rate limit).

    Data Manager names the quota in `ErrorInfo.metadata.quota_limit` (§3b.10); the Google Ads
    API answers `quotaError: RESOURCE_EXHAUSTED` for its daily operations limit and
    `RESOURCE_TEMPORARILY_EXHAUSTED` for short-term throttling (§3.9).
    """
    for detail in details:
        quota = str((detail.get("metadata") or {}).get("quota_limit", ""))
        if DAILY_QUOTA.search(quota):
            return True
        for err in detail.get("errors") or []:
            if isinstance(err, dict) and (err.get("errorCode") or {}).get("quotaError") == (
                "RESOURCE_EXHAUSTED"
            ):
                return True
    return False


def until_quota_reset(now: datetime) -> float:
    """Seconds from `now` to the next midnight of Google's quota day, plus a minute's margin."""
    local = now.astimezone(QUOTA_DAY)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), QUOTA_DAY)
    return (midnight - now).total_seconds() + 60


def _retry_delay(details: Sequence[Mapping[str, Any]]) -> float | None:
    # GoogleAdsFailure errors[].details.quotaErrorDetails.retryDelay, a Duration ("30s").
    for detail in details:
        for err in detail.get("errors") or []:
            delay = ((err.get("details") or {}).get("quotaErrorDetails") or {}).get("retryDelay")
            found = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(delay or ""))
            if found:
                return float(found.group(1))
    return None


def _reasons(details: list[dict[str, Any]]) -> set[str]:
    return {str(d["reason"]) for d in details if d.get("reason")}


def _describe(status: int, error: Mapping[str, Any], details: list[dict[str, Any]]) -> str:
    text = f"HTTP {status}"
    if error.get("status") or error.get("message"):
        text = f"{error.get('status') or status}: {error.get('message', '')}".rstrip(": ")
    for detail in details:
        kind = str(detail.get("@type", ""))
        if kind.endswith("google.rpc.ErrorInfo") and detail.get("reason"):
            quota = (detail.get("metadata") or {}).get("quota_limit")
            text += f" ({detail['reason']}{', quota ' + str(quota) if quota else ''})"
        elif kind.endswith("GoogleAdsFailure"):
            codes = [_ads_code(e) for e in detail.get("errors") or [] if isinstance(e, dict)]
            text += f" ({', '.join(c for c in codes if c)})" if any(codes) else ""
        if detail.get("requestId"):
            text += f" [requestId {detail['requestId']}]"
    return text


def errors_by_index(
    details: Sequence[Any],
) -> tuple[dict[int, list[tuple[str, str]]], list[tuple[str, str]]]:
    """(message, code) pairs per event index from BadRequest / GoogleAdsFailure details."""
    by_index: dict[int, list[tuple[str, str]]] = {}
    general: list[tuple[str, str]] = []
    for detail in details:
        if not isinstance(detail, dict):
            continue
        for violation in detail.get("fieldViolations") or []:
            found = INDEX.search(str(violation.get("field", "")))
            message = f"{violation.get('field', '')}: {violation.get('description', '')}"
            entry = (message, str(violation.get("reason") or ""))
            (by_index.setdefault(int(found.group(1)), []) if found else general).append(entry)
        for err in detail.get("errors") or []:
            path = (err.get("location") or {}).get("fieldPathElements") or []
            index = next(
                (p["index"] for p in path if p.get("fieldName") in ("conversions", "events")),
                None,
            )
            entry = (str(err.get("message", "")), _ads_code(err))
            (by_index.setdefault(int(index), []) if index is not None else general).append(entry)
    return by_index, general


def _ads_code(err: Mapping[str, Any]) -> str:
    # errorCode is a one-key object, e.g. {"conversionUploadError": "UNPARSEABLE_GCLID"}
    code = err.get("errorCode") or {}
    return str(next(iter(code.values()), "")) if isinstance(code, dict) else ""


def row(results: Sequence[Any], index: int) -> Mapping[str, Any]:
    row = results[index] if index < len(results) else {}
    return row if isinstance(row, dict) else {}


def json_body(response: base.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------- requestStatus (§3b.9)

FINISHED_WELL = "SUCCESS"
STILL_WORKING = ("PROCESSING", "REQUEST_STATUS_UNKNOWN", "")
FAILED = ("FAILED", "FAILURE")  # the guide's prose says FAILURE, the enum FAILED


def final_refusal(outcome: base.Outcome) -> base.Outcome:
    if isinstance(outcome, base.Retry):
        return base.Rejected(f"requestStatus:retrieve refused: {outcome.reason}")
    return outcome


def entry_for(entries: Sequence[Mapping[str, Any]], action: str) -> Mapping[str, Any] | None:
    for entry in entries:
        destination = entry.get("destination") or {}
        if action and action in (
            str(destination.get("productDestinationId", "")),
            str(destination.get("reference", "")),
        ):
            return entry
    return entries[0] if len(entries) == 1 else None


def status_request(
    base_url: str,
    request_id: str,
    pks: Sequence[str],
    headers: Mapping[str, str],
    token: str | None,
) -> base.OutgoingRequest:
    """`GET requestStatus:retrieve?requestId=…`: what became of an accepted Data Manager request."""
    query = urllib.parse.urlencode({"requestId": request_id})
    return base.OutgoingRequest(
        method="GET",
        url=f"{base_url}/requestStatus:retrieve?{query}",
        event_pks=tuple(pks),
        headers={k: v for k, v in headers.items() if k != "Content-Type"},
        secrets=(token,) if token else (),
    )


def request_status(entry: Mapping[str, Any] | None, action: str, ours: int) -> base.Outcome:
    """One destination's status as an outcome for each of our `ours` events sent to it."""
    if entry is None:
        return base.Retry(f"requestStatus names no destination for conversion action {action}")
    state = str(entry.get("requestStatus") or "")
    errors = _counts(entry.get("errorInfo"), "errorCounts")
    summary = _summary(entry, state or "REQUEST_STATUS_UNKNOWN", action, errors)
    if state in STILL_WORKING:
        return base.Retry(summary)
    if state == FINISHED_WELL:
        # Kept (in the delivery's last_error) only when Google said more than "done".
        said_more = (
            errors or match_rate(entry) or _counts(entry.get("warningInfo"), "warningCounts")
        )
        return base.Delivered(summary if said_more else "")
    if state in FAILED:
        return base.Rejected(summary)
    if state == "PARTIAL_SUCCESS":
        failed = sum(n for _, n in errors)
        if failed >= ours:
            return base.Rejected(summary)
        return base.Delivered(f"{summary}; Google does not say which of our {ours} failed")
    return base.Retry(f"unknown requestStatus: {summary}")


def _summary(
    entry: Mapping[str, Any], state: str, action: str, errors: list[tuple[str, int]]
) -> str:
    text = f"Google {state} (conversion action {action})"
    records = (entry.get("eventsIngestionStatus") or {}).get("recordCount")
    if records is not None:
        text += f": {records} record(s)"
    match = match_rate(entry)
    if match:
        text += f"; match rate {match}"
    if errors:
        text += "; errors: " + ", ".join(f"{reason} x{n}" for reason, n in errors)
    warnings = _counts(entry.get("warningInfo"), "warningCounts")
    if warnings:
        text += "; warnings: " + ", ".join(f"{reason} x{n}" for reason, n in warnings)
    return text


def match_rate(entry: Mapping[str, Any]) -> str | None:
    # uploadMatchRateRange (MATCH_RATE_RANGE_41_TO_50, ...) sits in the user-data status.
    for status in (
        entry.get("eventsIngestionStatus") or {},
        (entry.get("audienceMembersIngestionStatus") or {}).get("userDataIngestionStatus") or {},
    ):
        if isinstance(status, dict) and status.get("uploadMatchRateRange"):
            return str(status["uploadMatchRateRange"]).removeprefix("MATCH_RATE_RANGE_")
    return None


def _counts(info: Any, key: str) -> list[tuple[str, int]]:
    found = []
    for item in (info or {}).get(key) or [] if isinstance(info, dict) else []:
        if isinstance(item, dict):
            try:
                count = int(item.get("recordCount", 0))
            except (TypeError, ValueError):
                count = 0
            found.append((str(item.get("reason", "UNSPECIFIED")), count))
    return found


def service_account_jwt(creds: Mapping[str, str], scope: str, audience: str) -> str:
    """An RS256-signed JWT-bearer assertion for a service account (RFC 7523)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = serialization.load_pem_private_key(creds["private_key"].encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PermanentError("service account private_key is not an RSA key")
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": creds.get("private_key_id", "")}
    claims: dict[str, str | int] = {"iss": creds["client_email"], "scope": scope}
    claims["aud"] = audience
    claims |= {"iat": now, "exp": now + 3600}
    signing_input = f"{_b64(header)}.{_b64(claims)}".encode()
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return signing_input.decode() + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


def _b64(part: Mapping[str, Any]) -> str:
    raw = json.dumps(part, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
