"""A fake of TikTok's audience streaming API, `POST /open_api/v1.3/segment/mapping/`
(audiences.md, TikTok), holding each audience's members.

A bad `Access-Token` gets HTTP 401 with an empty body, as TikTok's Events API does; every other
refusal is HTTP 200 with a non-zero `code` (40001 no permission on the advertiser, 40002 a bad
parameter), TikTok's envelope `{code, message, request_id, data}`. Checked: `advertiser_ids` a
list holding the advertiser, `action` "add" or "delete", `id_schema` keys from TikTok's
`*_SHA256` list without repeats, `batch_data` of 1 to 10,000 people (the limit is unconfirmed),
each an inner list as long as `id_schema`, each entry `{}` or `{"id": <lower-case 64-hex>,
"audience_ids": [known ids]}`, and at least one id per person. A person is held as its ids by
schema key; "delete" removes every held person sharing an id with it.

`fail_next(n)` answers the next n requests with TikTok's rate limit (code 40100) and changes
nothing.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from .server import FakeServer, Received, Reply

ADVERTISER_ID = "7000000000000000001"
AUDIENCE_ID = "123456789"
ACCESS_TOKEN = "tt-fake-audience-token"
ID_SCHEMA = {"EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256", "GAID_SHA256", "AAID_SHA256"}
SHA256 = re.compile(r"^[a-f0-9]{64}$")
MAX_PEOPLE = 10_000
Person = dict[str, str]


class TikTokError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class FakeTikTokAudience(FakeServer):
    """TikTok's segment mapping for one advertiser, its audiences and one token."""

    def __init__(
        self,
        *,
        advertiser_id: str = ADVERTISER_ID,
        audience_ids: tuple[str, ...] = (AUDIENCE_ID,),
        access_token: str = ACCESS_TOKEN,
        base_path: str = "/open_api/v1.3",
    ) -> None:
        super().__init__()
        self.advertiser_id, self.access_token, self.base_path = (
            advertiser_id,
            access_token,
            base_path,
        )
        self.held: dict[str, list[Person]] = {a: [] for a in audience_ids}
        self._ids = (f"2026112903000{n:06d}FAKE" for n in itertools.count())

    @property
    def api_base(self) -> str:
        return self.url + self.base_path

    def emails(self, audience_id: str = AUDIENCE_ID) -> set[str]:
        return {p["EMAIL_SHA256"] for p in self.held[audience_id] if "EMAIL_SHA256" in p}

    def size(self, audience_id: str = AUDIENCE_ID) -> int:
        return len(self.held[audience_id])

    def fail_next(self, count: int) -> None:
        """The next `count` requests get TikTok's rate limit (40100) and change nothing."""
        self.script(*(self.envelope(40100, "Too many requests.") for _ in range(count)))

    def envelope(self, code: int, message: str) -> Reply:
        body = {"code": code, "message": message, "request_id": next(self._ids), "data": {}}
        return Reply(200, body)

    def handle(self, request: Received) -> Reply:
        if request.method != "POST" or request.path != f"{self.base_path}/segment/mapping/":
            return Reply(404, b"")
        if request.headers.get("access-token") != self.access_token:
            return Reply(401, b"")
        try:
            action, people = self._accept(request)
        except TikTokError as error:
            return self.envelope(error.code, error.message)
        for audience_id, person in people:
            if action == "add":
                self.held[audience_id].append(person)
            else:
                self.held[audience_id] = [
                    p
                    for p in self.held[audience_id]
                    if not any(p.get(k) == v for k, v in person.items())
                ]
        return self.envelope(0, "OK")

    def _accept(self, request: Received) -> tuple[str, list[tuple[str, Person]]]:
        try:
            body = json.loads(request.body)
        except ValueError:
            raise TikTokError(40002, "Invalid JSON body") from None
        if not isinstance(body, dict):
            raise TikTokError(40002, "Invalid JSON body")
        advertisers = body.get("advertiser_ids")
        if not isinstance(advertisers, list) or not advertisers:
            raise TikTokError(40002, "advertiser_ids: Missing data for required field.")
        if any(a != self.advertiser_id for a in advertisers):
            raise TikTokError(
                40001, "No permission to operate advertiser. You must be an admin or operator."
            )
        action = body.get("action")
        if action not in ("add", "delete"):
            raise TikTokError(40002, "action: Must be one of: add, delete.")
        schema = body.get("id_schema")
        if not isinstance(schema, list) or not schema or len(set(schema)) != len(schema):
            raise TikTokError(40002, "id_schema: Must be a non-empty list without repeats.")
        if any(k not in ID_SCHEMA for k in schema):
            raise TikTokError(40002, f"id_schema: Must be among {sorted(ID_SCHEMA)}.")
        batch = body.get("batch_data")
        if not isinstance(batch, list) or not 1 <= len(batch) <= MAX_PEOPLE:
            raise TikTokError(40002, f"batch_data: Length must be between 1 and {MAX_PEOPLE}.")
        return action, [p for n, row in enumerate(batch) for p in self._person(n, schema, row)]

    def _person(self, n: int, schema: list[str], row: Any) -> list[tuple[str, Person]]:
        """The person of one inner list, once per audience it names."""
        if not isinstance(row, list) or len(row) != len(schema):
            raise TikTokError(40002, f"batch_data.{n}: Length must match id_schema.")
        person: Person = {}
        audiences: set[str] = set()
        for key, entry in zip(schema, row, strict=True):
            if entry == {}:
                continue
            if not isinstance(entry, dict) or set(entry) != {"id", "audience_ids"}:
                raise TikTokError(40002, f"batch_data.{n}: Each entry needs id and audience_ids.")
            if not isinstance(entry["id"], str) or not SHA256.match(entry["id"]):
                raise TikTokError(40002, f"batch_data.{n}.id: Must be hashed with SHA-256.")
            ids = entry["audience_ids"]
            if not isinstance(ids, list) or not ids or any(a not in self.held for a in ids):
                raise TikTokError(40002, f"batch_data.{n}.audience_ids: Unknown audience.")
            person[key] = entry["id"]
            audiences.update(ids)
        if not person:
            raise TikTokError(40002, f"batch_data.{n}: At least one id is required.")
        return [(a, dict(person)) for a in sorted(audiences)]
