"""Meta Custom Audiences (customer list): members added with `POST /{audience_id}/users` and
removed with `DELETE /{audience_id}/users`, at most 10,000 rows per call (audiences.md, Meta).

The payload is Meta's multi-key form, `{"schema": [...], "data": [[...], ...]}`: one row per
member, one cell per schema key, "" where the member has no value. Every cell is a hash firstparty
already stores, normalised as Meta asks (`identity.pii`): EMAIL `em` (trimmed, lower case),
PHONE `ph` (E.164 digits without "+"), names, city, state, ZIP, country and gender as for the
Conversions API. EXTERN_ID is Meta's only key that needs no hashing; firstparty never stores the
clear id, so it sends the stored SHA-256 of the trimmed id: the same value `meta_capi` sends as
`external_id`, so the two match each other. Nothing is hashed again.

The access token travels in the JSON body, as for `meta_capi`, so no URL ever carries it.
"""

from __future__ import annotations

import hashlib
import hmac
import typing
from collections.abc import Mapping, Sequence, Set
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr

from firstparty.audiences import base
from firstparty.destinations import base as destinations

# Meta's schema key -> the stored hash it takes, in the order of every payload.
SCHEMA: dict[str, str] = {
    "EMAIL": "em",
    "PHONE": "ph",
    "EXTERN_ID": "external_id",
    "FN": "fn",
    "LN": "ln",
    "CT": "ct",
    "ST": "st",
    "ZIP": "zp",
    "COUNTRY": "country",
    "GEN": "ge",
}
# The keys Meta matches a person on alone; the others only sharpen a match.
MATCH_KEYS = ("em", "ph", "external_id")
# The customer-list file's column headers (Meta Business Help Centre 2082575038703844).
FILE_HEADERS = {
    "EMAIL": "email",
    "PHONE": "phone",
    "EXTERN_ID": "extern_id",
    "FN": "fn",
    "LN": "ln",
    "CT": "ct",
    "ST": "st",
    "ZIP": "zip",
    "COUNTRY": "country",
    "GEN": "gen",
}
# Graph error codes: transient and throttling are tried again; the rest refuse the request.
TRANSIENT_CODES = frozenset({1, 2, 341, 368, 5000, 21009})
THROTTLE_CODES = frozenset({4, 17, 32, 613, 80003, 80004})
INVALID_TOKEN = 190
FLAGGED_AUDIENCE = 1713230  # code 100: operation_status 471, edits blocked until resolved
SchemaKey = Literal["EMAIL", "PHONE", "EXTERN_ID", "FN", "LN", "CT", "ST", "ZIP", "COUNTRY", "GEN"]
ALL_KEYS: tuple[SchemaKey, ...] = typing.get_args(SchemaKey)


class MetaCustomAudienceSettings(destinations.DestinationSettings):
    """A customer-list Custom Audience and the system-user token allowed to edit it."""

    type: Literal["meta_custom_audience"] = "meta_custom_audience"
    audience_id: str = Field(pattern=r"^\d{1,20}$")
    access_token: SecretStr
    # Optional: adds appsecret_proof (HMAC-SHA256 of the token) for apps that require it.
    app_secret: SecretStr | None = None
    api_base: str = "https://graph.facebook.com/v25.0"
    # The schema keys sent when a member has them (default: every key firstparty stores).
    schema_keys: list[SchemaKey] = Field(default_factory=lambda: list(ALL_KEYS), min_length=1)
    # A multi-call change carries Meta's `session` (session_id, batch_seq, last_batch_flag).
    upload_session: bool = False


class MetaCustomAudience(base.AudienceAdapter):
    """Adds and removes the members of one Meta customer-list Custom Audience."""

    type = "meta_custom_audience"
    settings_model = MetaCustomAudienceSettings
    settings: MetaCustomAudienceSettings
    max_members = 10_000
    min_members = 100
    identifier_keys = MATCH_KEYS
    example_settings: ClassVar[Mapping[str, Any]] = {
        "name": "meta_buyers",
        "type": "meta_custom_audience",
        "audience_id": "23850000000000001",
        "access_token": "env:META_ACCESS_TOKEN",
    }

    def build(
        self, change: base.Change, members: Sequence[base.Member], token: str | None = None
    ) -> list[destinations.OutgoingRequest]:
        usable = [m for m in members if self.usable(m)]
        size = min(self.settings.batch_size or self.max_members, self.max_members)
        parts = [usable[i : i + size] for i in range(0, len(usable), size)]
        session_id = _session_id(change, usable) if len(parts) > 1 else None
        return [
            self._request(change, part, self._session(session_id, seq, len(parts), len(usable)))
            for seq, part in enumerate(parts, 1)
        ]

    def payload(self, members: Sequence[base.Member]) -> dict[str, Any]:
        """Meta's `{schema, data}`: the keys any of these members has, one row each."""
        schema = self._schema({k for m in members for k, v in m.identifiers.items() if v})
        return {"schema": schema, "data": [_row(m, schema) for m in members]}

    def interpret(
        self, request: destinations.OutgoingRequest, response: destinations.Response
    ) -> dict[str, destinations.Outcome]:
        keys = request.event_pks
        body = _json(response)
        error = body.get("error") if isinstance(body.get("error"), dict) else None
        if 200 <= response.status < 300 and error is None:
            return dict.fromkeys(keys, destinations.Delivered(_received(body)))
        after = destinations.retry_after(response.headers)
        if error is None:
            reason = f"HTTP {response.status} from Meta without a Graph error body"
            if response.status in (408, 429) or response.status >= 500:
                return dict.fromkeys(keys, destinations.Retry(reason, after))
            return dict.fromkeys(keys, destinations.Rejected(reason))
        return dict.fromkeys(keys, _error_outcome(error, response.status, after))

    def export_file(self, present: Set[str]) -> base.ExportFile:
        """Meta's customer-list file: the columns of the keys present (as `payload`'s schema),
        one row of hashes per member it can match."""
        schema = self._schema(present)

        def row(m: base.Member) -> list[str] | None:
            return _row(m, schema) if self.usable(m) else None

        return base.ExportFile([FILE_HEADERS[k] for k in schema], row)

    # ------------------------------------------------------------ helpers

    def _schema(self, present: Set[str]) -> list[str]:
        """The schema keys this destination sends whose identifiers are among `present`."""
        return [k for k in SCHEMA if k in self.settings.schema_keys and SCHEMA[k] in present]

    def _request(
        self,
        change: base.Change,
        members: Sequence[base.Member],
        session: dict[str, Any] | None,
    ) -> destinations.OutgoingRequest:
        access_token = self.settings.access_token.get_secret_value()
        body: dict[str, Any] = {"payload": self.payload(members)}
        if session is not None:
            body["session"] = session
        body["access_token"] = access_token
        secrets = [access_token]
        if self.settings.app_secret is not None:
            key = self.settings.app_secret.get_secret_value()
            proof = hmac.new(key.encode(), access_token.encode(), hashlib.sha256).hexdigest()
            body["appsecret_proof"] = proof
            secrets += [key, proof]
        return destinations.OutgoingRequest(
            method="POST" if change is base.Change.ADD else "DELETE",
            url=f"{self.settings.api_base.rstrip('/')}/{self.settings.audience_id}/users",
            event_pks=tuple(m.key for m in members),
            headers={"Content-Type": "application/json"},
            json=body,
            secrets=tuple(secrets),
        )

    def _session(
        self, session_id: int | None, seq: int, count: int, total: int
    ) -> dict[str, Any] | None:
        if session_id is None or not self.settings.upload_session:
            return None
        return {
            "session_id": session_id,
            "batch_seq": seq,
            "last_batch_flag": seq == count,
            "estimated_num_total": total,
        }


def _row(member: base.Member, schema: Sequence[str]) -> list[str]:
    """One member's hashes in the order of `schema` ("" for a key it lacks)."""
    return [member.identifiers.get(SCHEMA[k]) or "" for k in schema]


def _session_id(change: base.Change, members: Sequence[base.Member]) -> int:
    """A number naming this change (the same members give the same one): pure, no clock."""
    digest = hashlib.sha256(change.value.encode())
    for member in members:
        digest.update(member.key.encode() + b"\0")
    return int(digest.hexdigest()[:15], 16)


def _json(response: destinations.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _received(body: Mapping[str, Any]) -> str:
    words = [f"{k}={body[k]}" for k in ("num_received", "num_invalid_entries") if k in body]
    samples = body.get("invalid_entry_samples")
    if samples:
        words.append(f"invalid_entry_samples={samples}")
    return " ".join(words)


def _error_outcome(
    error: Mapping[str, Any], status: int, after: float | None
) -> destinations.Outcome:
    """A Graph error as one outcome for the whole request."""
    code, subcode = error.get("code"), error.get("error_subcode")
    reason = _describe(error)
    if code == INVALID_TOKEN:
        return destinations.Rejected(f"Meta refused the access token: {reason}")
    if code == 100 and subcode == FLAGGED_AUDIENCE:
        return destinations.Rejected(f"Meta blocks edits of this flagged audience: {reason}")
    if error.get("is_transient") is True or code in TRANSIENT_CODES or code in THROTTLE_CODES:
        return destinations.Retry(reason, after)
    if status in (408, 429) or status >= 500:
        return destinations.Retry(reason, after)
    return destinations.Rejected(reason)


def _describe(error: Mapping[str, Any]) -> str:
    """Meta's own words with the codes, for the operator."""
    words = [str(error[k]) for k in ("message", "error_user_msg") if error.get(k)]
    codes = "/".join(str(error[k]) for k in ("code", "error_subcode") if error.get(k) is not None)
    trace = error.get("fbtrace_id")
    text = " - ".join(words) or "Meta error"
    return f"{text} (code {codes}{f', fbtrace_id {trace}' if trace else ''})"
