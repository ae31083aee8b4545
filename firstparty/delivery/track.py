"""The outgoing-request log: one `tracks` row per HTTP request, linked to the work it carried."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from firstparty.delivery.outbox import DeliveryStatus
from firstparty.destinations.base import OutgoingRequest
from firstparty.store import db
from firstparty.store.models import track_events, tracks

REDACTED = "[redacted]"
# Enough of an answer to read the platform's error; a full page of HTML helps nobody.
MAX_RESPONSE_CHARS = 4096


@dataclass(frozen=True)
class Link:
    """One delivery carried by a request, and what the request did for it."""

    delivery_id: int
    event_pk: str
    outcome: str  # delivered | retry | rejected | skipped
    reason: str | None = None


@dataclass(frozen=True)
class Sent:
    """One outgoing request (sent, or only built on a dry run) and its answer."""

    request: OutgoingRequest
    attempt: int
    # The worst status of the work it carried; None until settled (`send._Batch.settle`).
    status: DeliveryStatus | None
    response_status: int | None = None
    response_body: bytes | None = None
    duration_ms: float | None = None
    error: str | None = None
    links: Sequence[Link] = field(default_factory=tuple)
    # `request.json` as encoded for sending, if it was: the log reuses it.
    encoded: bytes | None = None


def redact(text: str, secrets: Sequence[str]) -> str:
    """The text with every secret replaced by a marker."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def redact_json(value: Any, secrets: Sequence[str]) -> Any:
    """A JSON value with every secret masked inside its strings (keys included)."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redact(str(k), secrets): redact_json(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_json(v, secrets) for v in value]
    return value


def request_body(request: OutgoingRequest, encoded: bytes | None = None) -> Any:
    """What the log keeps of the request body: the JSON, or the raw body as text.

    `encoded`: `request.json` as msgspec encoded it. When no secret occurs anywhere in that
    text, redaction would change nothing, and the log takes the encoded JSON as it is (JSON
    escaping is per character, so a secret inside any string shows in the text escaped).
    """
    if request.json is not None:
        try:
            text = msgspec.json.encode(request.json) if encoded is None else encoded
        except (TypeError, ValueError, OverflowError):
            return redact_json(request.json, request.secrets)
        if not any(msgspec.json.encode(s)[1:-1] in text for s in request.secrets if s):
            return msgspec.Raw(text)
        return redact_json(request.json, request.secrets)
    if request.body is not None:
        return json_or_text(redact(request.body.decode("utf-8", "replace"), request.secrets))
    return None


def body_bytes(body: Any) -> int | None:
    """The size of a logged body as JSON text (`request_body`'s value), in bytes."""
    if body is None:
        return None
    if isinstance(body, msgspec.Raw):
        return len(memoryview(body))
    return len(msgspec.json.encode(body))


def json_or_text(text: str) -> Any:
    """A body that is a JSON object or array as that value (so every destination's body is
    stored alike, whether its adapter gave JSON or bytes); any other body as its text."""
    if not text.lstrip().startswith(("{", "[")):
        return text
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text
    return value if isinstance(value, dict | list) else text


def record(conn: Connection, *, destination: str, sent: Sent, now: datetime) -> int:
    """Write one request and its links; returns the track id."""
    return record_all(conn, [(destination, sent)], now=now)[0]


def record_all(
    conn: Connection, requests: Sequence[tuple[str, Sent]], *, now: datetime
) -> list[int]:
    """Write requests (each with its destination) and their links: one statement for the
    requests and one for the links where the engine returns many rows' ids in order (SQLite,
    PostgreSQL, MariaDB), not two round trips a request. Returns the track ids, in order."""
    rows = [_track_row(destination, sent, now) for destination, sent in requests]
    if not rows:
        return []
    if conn.dialect.insert_executemany_returning_sort_by_parameter_order:
        insert = sa.insert(tracks).returning(tracks.c.id, sort_by_parameter_order=True)
        ids = [int(row[0]) for row in conn.execute(insert, rows)]
    else:
        ids = [_one_id(conn.execute(sa.insert(tracks).values(**row))) for row in rows]
    links = [
        {
            "track_id": track_id,
            "delivery_id": link.delivery_id,
            "event_pk": link.event_pk,
            "outcome": link.outcome,
            "reason": link.reason,
        }
        for track_id, (_, sent) in zip(ids, requests, strict=True)
        for link in sent.links
    ]
    db.bulk_insert(conn, track_events, links)
    return ids


def _one_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def _track_row(destination: str, sent: Sent, now: datetime) -> dict[str, Any]:
    secrets = sent.request.secrets
    body = request_body(sent.request, sent.encoded)
    answer = sent.response_body
    text = None if answer is None else redact(answer.decode("utf-8", "replace"), secrets)
    return {
        "destination": destination,
        "status": sent.status or DeliveryStatus.PENDING,
        "attempt": sent.attempt,
        "method": sent.request.method,
        "url": redact(sent.request.url, secrets),
        "request": body,
        "request_bytes": body_bytes(body),
        "response_status": sent.response_status,
        "response_body": None if text is None else text[:MAX_RESPONSE_CHARS],
        "duration_ms": sent.duration_ms,
        "error": None if sent.error is None else redact(sent.error, secrets),
        "created_at": now,
    }
