"""A fake of Meta's Custom Audience users endpoint, `POST` and `DELETE
/{version}/{audience_id}/users` (audiences.md, Meta), holding each audience's members.

Every request is checked as Meta would: the token (code 190) and `appsecret_proof`, the audience
id (code 100 subcode 33), a flagged audience (code 100 subcode 1713230, edits blocked),
`payload.schema` keys from Meta's multi-key list without repeats, every row as wide as the
schema, at most 10,000 rows, every cell a string and, for the keys Meta wants hashed (all but
EXTERN_ID and MADID), "" or a lower-case 64-hex SHA-256, and the `session` object's fields
(`batch_seq` 1, 2, ... within a session, nothing after its `last_batch_flag`). A row with no
value at all is counted in `num_invalid_entries`. The answer carries Meta's fields
(`audience_id`, `session_id`, `num_received`, `num_invalid_entries`, `invalid_entry_samples`).
The Graph error codes are Meta's; the wording of the fake's own checks is its own.

A person is held as the row's non-empty cells; a DELETE row removes every held person sharing a
matching key (EMAIL, PHONE, EXTERN_ID, MADID) with it. `fail_next(n)` answers the next n requests
with Graph's transient error (code 2, HTTP 500) without changing anything.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
from typing import Any

from .server import FakeServer, Received, Reply

AUDIENCE_ID = "23850000000000001"
ACCESS_TOKEN = "EAAB-fake-meta-audience-token"
SCHEMA_KEYS = {
    "EXTERN_ID",
    "EMAIL",
    "PHONE",
    "GEN",
    "DOBY",
    "DOBM",
    "DOBD",
    "LN",
    "FN",
    "FI",
    "CT",
    "ST",
    "ZIP",
    "COUNTRY",
    "MADID",
}
CLEAR_KEYS = {"EXTERN_ID", "MADID"}
MATCH_KEYS = ("EMAIL", "PHONE", "EXTERN_ID", "MADID")
SHA256 = re.compile(r"^[a-f0-9]{64}$")
MAX_ROWS = 10_000
Person = dict[str, str]


class GraphError(Exception):
    def __init__(self, code: int, message: str, subcode: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.subcode = code, message, subcode


class FakeMetaAudience(FakeServer):
    """Meta's users endpoint for a set of customer-list audiences and one token."""

    def __init__(
        self,
        *,
        audience_ids: tuple[str, ...] = (AUDIENCE_ID,),
        access_token: str = ACCESS_TOKEN,
        app_secret: str | None = None,
    ) -> None:
        super().__init__()
        self.access_token, self.app_secret = access_token, app_secret
        self.held: dict[str, list[Person]] = {a: [] for a in audience_ids}
        self.flagged: set[str] = set()  # audiences with operation_status 471
        self.sessions: list[dict[str, Any]] = []
        self._trace = (f"AFakeTrace{n:06d}" for n in itertools.count())

    @property
    def api_base(self) -> str:
        return self.url + "/v25.0"

    def emails(self, audience_id: str = AUDIENCE_ID) -> set[str]:
        """The EMAIL hashes of the people the audience holds."""
        return {p["EMAIL"] for p in self.held[audience_id] if p.get("EMAIL")}

    def size(self, audience_id: str = AUDIENCE_ID) -> int:
        return len(self.held[audience_id])

    def fail_next(self, count: int) -> None:
        """The next `count` requests get Graph's transient error and change nothing."""
        self.script(*(self.transient() for _ in range(count)))

    def transient(self) -> Reply:
        error = {
            "message": "An unexpected error has occurred. Please retry your request later.",
            "type": "OAuthException",
            "is_transient": True,
            "code": 2,
            "fbtrace_id": next(self._trace),
        }
        return Reply(500, {"error": error})

    def throttled(self) -> Reply:
        error = {
            "message": "(#80003) There have been too many calls to this ad-account.",
            "type": "OAuthException",
            "is_transient": True,
            "code": 80003,
            "fbtrace_id": next(self._trace),
        }
        return Reply(400, {"error": error})

    # ------------------------------------------------------------ the endpoint

    def handle(self, request: Received) -> Reply:
        try:
            audience_id, params = self._accept(request)
            payload = self._payload(params.get("payload"))
            session = self._session(params.get("session"))
        except GraphError as error:
            return Reply(400, self._error(error))
        rows = [dict(zip(payload["schema"], row, strict=True)) for row in payload["data"]]
        people = [{k: v for k, v in row.items() if v} for row in rows]
        invalid = [p for p in people if not p]
        valid = [p for p in people if p]
        if request.method == "POST":
            self.held[audience_id].extend(valid)
        else:
            self._remove(audience_id, valid)
        if session is not None:
            self.sessions.append(session)
        answer = {
            "audience_id": audience_id,
            "session_id": str((session or {}).get("session_id", 0)),
            "num_received": len(people),
            "num_invalid_entries": len(invalid),
            "invalid_entry_samples": {},
        }
        return Reply(200, answer)

    def _remove(self, audience_id: str, rows: list[Person]) -> None:
        def matches(held: Person, row: Person) -> bool:
            return any(row.get(k) and held.get(k) == row[k] for k in MATCH_KEYS)

        self.held[audience_id] = [
            p for p in self.held[audience_id] if not any(matches(p, r) for r in rows)
        ]

    def _accept(self, request: Received) -> tuple[str, dict[str, Any]]:
        match = re.fullmatch(r"/v\d+\.\d+/([^/]+)/users", request.path)
        if request.method not in ("POST", "DELETE") or match is None:
            raise GraphError(2500, f"Unknown path components: {request.path}")
        params: dict[str, Any] = {k: v[-1] for k, v in request.query.items()}
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise GraphError(100, "Invalid parameter: the body must be JSON")
        try:
            params.update(json.loads(request.body))
        except ValueError:
            raise GraphError(100, "Invalid parameter: the body could not be parsed") from None
        self._authenticate(params)
        audience_id = match.group(1)
        if audience_id not in self.held:
            raise GraphError(
                100,
                f"Unsupported post request. Object with ID '{audience_id}' does not exist, "
                "cannot be loaded due to missing permissions, or does not support this operation.",
                subcode=33,
            )
        if audience_id in self.flagged:
            raise GraphError(100, "Invalid parameter", subcode=1713230)
        return audience_id, params

    def _authenticate(self, params: dict[str, Any]) -> None:
        token = params.get("access_token")
        if token != self.access_token:
            raise GraphError(190, "Invalid OAuth access token - Cannot parse access token")
        if self.app_secret is not None:
            proof = hmac.new(self.app_secret.encode(), token.encode(), hashlib.sha256)
            if params.get("appsecret_proof") != proof.hexdigest():
                raise GraphError(100, "Invalid appsecret_proof provided in the API argument")

    def _payload(self, payload: Any) -> dict[str, Any]:
        if isinstance(payload, str):
            try:
                payload = json.loads(payload)
            except ValueError:
                raise GraphError(100, "Invalid parameter: payload is not JSON") from None
        if not isinstance(payload, dict) or set(payload) - {"schema", "data", "app_ids"}:
            raise GraphError(100, "Invalid parameter: payload must hold schema and data")
        schema = payload.get("schema")
        if isinstance(schema, str):
            schema = [schema]
        if not isinstance(schema, list) or not schema:
            raise GraphError(100, "Invalid parameter: schema must name at least one key")
        unknown = [k for k in schema if k not in SCHEMA_KEYS]
        if unknown:
            raise GraphError(100, f"Invalid parameter: unknown schema key {unknown[0]!r}")
        if len(set(schema)) != len(schema):
            raise GraphError(100, "Invalid parameter: a schema key appears twice")
        data = payload.get("data")
        if not isinstance(data, list) or not data:
            raise GraphError(100, "Invalid parameter: data must be a non-empty array")
        if len(data) > MAX_ROWS:
            raise GraphError(100, f"Invalid parameter: at most {MAX_ROWS} rows per call")
        for n, row in enumerate(data):
            self._check_row(n, schema, row)
        return {"schema": schema, "data": data}

    def _check_row(self, n: int, schema: list[str], row: Any) -> None:
        if not isinstance(row, list) or len(row) != len(schema):
            raise GraphError(100, f"Invalid parameter: data[{n}] does not match the schema width")
        for key, cell in zip(schema, row, strict=True):
            if not isinstance(cell, str):
                raise GraphError(100, f"Invalid parameter: data[{n}] {key} must be a string")
            if key not in CLEAR_KEYS and cell and not SHA256.match(cell):
                raise GraphError(100, f"Invalid parameter: data[{n}] {key} must be SHA-256 hex")

    def _session(self, session: Any) -> dict[str, Any] | None:
        if session is None:
            return None
        if not isinstance(session, dict):
            raise GraphError(100, "Invalid parameter: session must be an object")
        ints = ("session_id", "batch_seq")
        if not all(isinstance(session.get(k), int) and session[k] > 0 for k in ints):
            raise GraphError(100, "Invalid parameter: session_id and batch_seq are required")
        if not isinstance(session.get("last_batch_flag"), bool):
            raise GraphError(100, "Invalid parameter: last_batch_flag must be a boolean")
        earlier = [s for s in self.sessions if s["session_id"] == session["session_id"]]
        if any(s["last_batch_flag"] for s in earlier):
            raise GraphError(100, "Invalid parameter: this session's last batch was sent")
        if session["batch_seq"] != len(earlier) + 1:
            raise GraphError(100, "Invalid parameter: batch_seq must follow the session's last")
        return session

    def _error(self, error: GraphError) -> dict[str, Any]:
        out: dict[str, Any] = {"message": error.message, "type": "OAuthException"}
        out["code"] = error.code
        if error.subcode is not None:
            out["error_subcode"] = error.subcode
        if error.subcode == 1713230:
            out["error_user_title"] = "Audience Upload Blocked"
            out["error_user_msg"] = (
                "Before updating user memberships, you must resolve integrity restrictions on "
                "this Data File Custom Audience."
            )
        out["fbtrace_id"] = next(self._trace)
        return {"error": out}
