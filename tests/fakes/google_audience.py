"""A fake of Data Manager's Customer Match calls, `POST /v1/audienceMembers:ingest` and
`:remove` (audiences.md, Google), on `FakeGoogle` (its token endpoint and requestStatus), holding
each user list's members.

Checked fail-fast, answered with `google.rpc.Status` and `BadRequest.fieldViolations` as Data
Manager does: the bearer token and its `datamanager` scope; the request's fields (remove takes no
`consent` or `termsOfService`); 1 to 10 destinations, each a GOOGLE_ADS operating account and a
known user list id as `productDestinationId`; 1 to 10,000 audience members; each with 1 to 10
user identifiers of exactly one kind (email, phone, complete address, its region a two-letter
upper-case code); hashes valid for the request's `encoding` (required with user data); consent
values from Google's enum, on the request and per member; on ingest, the Customer Match terms of
service accepted. The reasons of the fake's own checks (TOO_MANY_AUDIENCE_MEMBERS,
TERMS_AND_CONDITIONS_NOT_SIGNED, INVALID_COUNTRY_CODE) are unconfirmed.

A member whose consent (its own, else the request's) denies adUserData or adPersonalization is
not added. A person is held as its identifiers; remove drops every held person sharing one.
`fail_next(n)` answers the next n requests 503 UNAVAILABLE and changes nothing.

Accepted requests are processed later, as Google does: `requestStatus:retrieve` answers
PROCESSING for the first `processing_calls` asks of a request id, then its final status (an
unknown request id: 400 INVALID_REQUEST_ID). `refuse_next(n, reason)` accepts the next n ingests
(a requestId) but holds none of their members and reports them FAILED with that processing error.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from .google import (
    CONSENT_VALUES,
    DATAMANAGER,
    FakeGoogle,
    _destination_violations,
    _encoded_ok,
    _hashed_values,
    error_info,
    invalid_argument,
    request_info,
    status_error,
    unavailable,
)
from .server import Received, Reply

CUSTOMER_ID = "1234567890"
USER_LIST_ID = "9876543210"
INGEST_KEYS = {
    "destinations",
    "audienceMembers",
    "consent",
    "validateOnly",
    "encoding",
    "encryptionInfo",
    "termsOfService",
}
REMOVE_KEYS = {"destinations", "audienceMembers", "validateOnly", "encoding", "encryptionInfo"}
MEMBER_KEYS = {"userData", "consent", "destinationReferences", "pairData", "mobileData"}
IDENTIFIER_KINDS = {"emailAddress", "phoneNumber", "address"}
ADDRESS_KEYS = {"givenName", "familyName", "regionCode", "postalCode"}
MAX_MEMBERS = 10_000
Violation = tuple[str, str, str]
Person = frozenset[str]


class FakeGoogleAudience(FakeGoogle):
    """Google's token endpoint, requestStatus and the Customer Match member calls."""

    def __init__(self, *, user_list_ids: tuple[str, ...] = (USER_LIST_ID,)) -> None:
        super().__init__()
        self.held: dict[str, set[Person]] = {u: set() for u in user_list_ids}
        self.refusals: list[str] = []  # processing error of each next ingest to fail later

    def emails(self, user_list_id: str = USER_LIST_ID) -> set[str]:
        """The email hashes of the people the list holds."""
        return {
            i.removeprefix("emailAddress:")
            for p in self.held[user_list_id]
            for i in p
            if i.startswith("emailAddress:")
        }

    def size(self, user_list_id: str = USER_LIST_ID) -> int:
        return len(self.held[user_list_id])

    def fail_next(self, count: int) -> None:
        self.script(*(unavailable() for _ in range(count)))

    def refuse_next(
        self, count: int, reason: str = "PROCESSING_ERROR_REASON_INVALID_EVENT"
    ) -> None:
        """Accept the next `count` ingests, then fail them in processing (nothing held)."""
        self.refusals += [reason] * count

    def handle(self, request: Received) -> Reply:
        verb = {"/v1/audienceMembers:ingest": "ingest", "/v1/audienceMembers:remove": "remove"}
        if request.method == "POST" and request.path in verb:
            return self._authorised(request, DATAMANAGER) or self._members(
                request, verb[request.path]
            )
        return super().handle(request)

    # ------------------------------------------------------------ the member calls

    def _members(self, request: Received, verb: str) -> Reply:
        try:
            body = request.json()
        except ValueError:
            return status_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if not isinstance(body, dict):
            return status_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        violations = self.violations(body, verb)
        if violations:
            return invalid_argument(violations)
        if (
            verb == "ingest"
            and (body.get("termsOfService") or {}).get("customerMatchTermsOfServiceStatus")
            != "ACCEPTED"
        ):
            message = "The Customer Match terms of service must be accepted."
            info = error_info("TERMS_AND_CONDITIONS_NOT_SIGNED")
            return status_error(400, "FAILED_PRECONDITION", message, info, request_info())
        if body.get("validateOnly"):
            return Reply(200, {})
        lists = [d["productDestinationId"] for d in body["destinations"]]
        refusal = self.refusals.pop(0) if verb == "ingest" and self.refusals else None
        statuses = [self._apply(body, verb, user_list, refusal) for user_list in lists]
        request_id = str(uuid.uuid4())
        self.status_calls[request_id] = 0
        self.statuses[request_id] = statuses
        return Reply(200, {"requestId": request_id})

    def _apply(
        self, body: dict[str, Any], verb: str, user_list: str, refusal: str | None
    ) -> dict[str, Any]:
        people = []
        for member in body["audienceMembers"]:
            if verb == "ingest" and not _consents(member.get("consent") or body.get("consent")):
                continue
            people.append(_person(member))
        held = self.held[user_list]
        if refusal:
            pass  # failed in processing: nothing held
        elif verb == "ingest":
            held.update(people)
        else:
            self.held[user_list] = {p for p in held if not any(p & q for q in people)}
        destination = next(
            d for d in body["destinations"] if d["productDestinationId"] == user_list
        )
        return {
            "destination": destination,
            "records": len(body["audienceMembers"]),
            "errors": {refusal: len(body["audienceMembers"])} if refusal else {},
            "user_data": True,
            "audience": verb,
        }

    def _final(self, status: dict[str, Any]) -> dict[str, Any]:
        if "audience" not in status:
            return super()._final(status)
        ingestion: dict[str, Any] = {"recordCount": str(status["records"])}
        if self.match_rate:
            ingestion["uploadMatchRateRange"] = self.match_rate
        key = (
            "audienceMembersIngestionStatus"
            if status["audience"] == "ingest"
            else "audienceMembersRemovalStatus"
        )
        entry: dict[str, Any] = {
            "destination": status["destination"],
            "requestStatus": "FAILED" if status["errors"] else "SUCCESS",
            key: {"userDataIngestionStatus": ingestion},
        }
        if status["errors"]:
            counts = [{"recordCount": str(n), "reason": r} for r, n in status["errors"].items()]
            entry["errorInfo"] = {"errorCounts": counts}
        return entry

    def violations(self, body: dict[str, Any], verb: str) -> list[Violation]:
        """Data Manager's fail-fast checks of an ingest or remove body."""
        problems: list[Violation] = []
        unknown = set(body) - (INGEST_KEYS if verb == "ingest" else REMOVE_KEYS)
        if unknown:
            problems.append((sorted(unknown)[0], "Unknown field.", "INVALID_FORMAT"))
        destinations = body.get("destinations") or []
        if not isinstance(destinations, list) or not 1 <= len(destinations) <= 10:
            problems.append(("destinations", "Between 1 and 10 destinations.", "INVALID_FORMAT"))
            destinations = []
        for n, dest in enumerate(destinations):
            problems += _destination_violations(f"destinations[{n}]", dest)
            if str(dest.get("productDestinationId")) not in self.held:
                field = f"destinations[{n}].product_destination_id"
                problems.append((field, "Unknown user list.", "INVALID_DESTINATION"))
        members = body.get("audienceMembers")
        if not isinstance(members, list) or not 1 <= len(members) <= MAX_MEMBERS:
            reason = "TOO_MANY_AUDIENCE_MEMBERS"
            return [*problems, ("audience_members", f"Between 1 and {MAX_MEMBERS}.", reason)]
        encoding = body.get("encoding")
        if encoding not in ("HEX", "BASE64"):
            problems.append(("encoding", "Encoding is required.", "REQUIRED_FIELD_MISSING"))
        for n, member in enumerate(members):
            problems += _member_violations(f"audience_members[{n}]", member, encoding)
        if "consent" in body:
            problems += _consent_violations("consent", body["consent"])
        return problems


def _member_violations(where: str, member: Any, encoding: Any) -> list[Violation]:
    if not isinstance(member, dict) or set(member) - MEMBER_KEYS:
        return [(where, "Unknown field.", "INVALID_FORMAT")]
    problems: list[Violation] = []
    identifiers = (member.get("userData") or {}).get("userIdentifiers")
    if not isinstance(identifiers, list) or not identifiers:
        return [(f"{where}.user_data", "No user identifiers.", "REQUIRED_FIELD_MISSING")]
    if len(identifiers) > 10:
        return [(f"{where}.user_data", "Too many identifiers.", "TOO_MANY_USER_IDENTIFIERS")]
    for m, ident in enumerate(identifiers):
        at = f"{where}.user_data.user_identifiers[{m}]"
        if not isinstance(ident, dict) or len(ident) != 1 or set(ident) - IDENTIFIER_KINDS:
            problems.append((at, "Exactly one identifier.", "INVALID_FORMAT"))
            continue
        if "address" in ident and set(ident["address"] or {}) != ADDRESS_KEYS:
            problems.append((f"{at}.address", "Incomplete address.", "REQUIRED_FIELD_MISSING"))
            continue
        if "address" in ident and not re.fullmatch(
            r"[A-Z]{2}", str(ident["address"]["regionCode"])
        ):
            problems.append(
                (f"{at}.address.region_code", "Invalid region code.", "INVALID_COUNTRY_CODE")
            )
            continue
        for key, value in _hashed_values(ident):
            if not _encoded_ok(value, encoding):
                reason = "INVALID_HEX_ENCODING" if encoding == "HEX" else "INVALID_BASE64_ENCODING"
                problems.append((f"{at}.{key}", "The SHA256 encoded value is malformed.", reason))
    if "consent" in member:
        problems += _consent_violations(f"{where}.consent", member["consent"])
    return problems


def _consent_violations(where: str, consent: Any) -> list[Violation]:
    if not isinstance(consent, dict) or set(consent) - {"adUserData", "adPersonalization"}:
        return [(where, "Unknown consent field.", "INVALID_FORMAT")]
    bad = [k for k, v in consent.items() if v not in CONSENT_VALUES]
    return [(f"{where}.{k}", "Invalid consent status.", "INVALID_ENUM_VALUE") for k in bad]


def _consents(consent: Any) -> bool:
    values = (consent or {}).values() if isinstance(consent, dict) else []
    return "CONSENT_DENIED" not in values


def _person(member: dict[str, Any]) -> Person:
    found = set()
    for ident in member["userData"]["userIdentifiers"]:
        kind, value = next(iter(ident.items()))
        if kind == "address":
            value = "|".join(str(value[k]) for k in sorted(ADDRESS_KEYS))
        found.add(f"{kind}:{value}")
    return frozenset(found)
