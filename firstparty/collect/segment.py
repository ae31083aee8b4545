"""Segment's tracking spec onto our event model: pure functions, one message at a time.

The mapping (documented in docs/segment.md):

    messageId            event_id (an SDK retry is deduplicated); hashed when not a valid id
    track / page         track (event -> name) / page
    screen               page, titled with the screen's name
    identify             identify; other traits become its properties (hashed but a few)
    alias / group        track "segment.alias" / "segment.group": recorded, never applied
    anonymousId          server sources: visitor_id (hashed unless it is one of our visitor ids)
    userId               server sources: user_id when it is a firstparty user id (u_...);
                         always user.external_id (hashed at the door like all personal data)
    traits               email, phone, names, address, birthday, gender -> user (hashed; one
                         that cannot be normalised is dropped with a warning)
    context.page         url, referrer, title (click ids and UTM come from the url)
    context.campaign     utm_* added to the url when the url lacks them
    context.ip/userAgent context.ip / context.user_agent (honoured from server sources only)
    timestamp            corrected for clock skew: timestamp + (receivedAt - sentAt)

`record()` is the message as kept in the event's `request`: no write key, no personal traits.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from firstparty.collect import nonfinite, prepare, schema
from firstparty.errors import FieldError, InputError
from firstparty.identity import pii

# Segment's documented limits: 32 KB a message, 500 KB a batch request.
MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500

# What /v1/t, /v1/p... stand for (analytics.js posts to the first letter of the type).
SHORT = {"t": "track", "p": "page", "s": "screen", "i": "identify", "a": "alias", "g": "group"}
TYPES = frozenset(SHORT.values())

# A firstparty user id, as identity.users.new_user_id makes it ("u_" + 22 url-safe chars).
_USER_ID = re.compile(r"^u_[A-Za-z0-9_\-]{22}$")
# A firstparty visitor id (identity cookie: 128 random bits, URL-safe): kept as it is, so a
# server relaying the browser's fp_id joins its visitor; any other anonymousId is hashed.
_VISITOR_ID = re.compile(r"^[A-Za-z0-9_\-]{22}$")
_EVENT_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
# Segment's traits that are personal data: hashed into `user`, never kept in clear.
_PERSONAL = frozenset(
    {
        "email",
        "phone",
        "firstName",
        "first_name",
        "lastName",
        "last_name",
        "name",
        "address",
        "birthday",
        "gender",
    }
)
# Traits kept in clear: they describe an account, not who holds it. Any other trait (custom
# ones, or Segment's username, title, website, avatar, description, age, id...) may name a
# person: its value is hashed like any identifier.
_CLEAR_TRAITS = frozenset(
    {"plan", "createdAt", "created_at", "logins", "industry", "employees", "company"}
)
_ADDRESS = {"city": "city", "state": "state", "postalCode": "zip", "country": "country"}
_CAMPAIGN = {
    "source": "utm_source",
    "medium": "utm_medium",
    "name": "utm_campaign",
    "term": "utm_term",
    "content": "utm_content",
    "id": "utm_id",
}

Id = str | int | float | None
T = TypeVar("T")


class Message(msgspec.Struct, rename="camel"):
    """One Segment message, loosely typed as the SDKs send it; other fields are ignored."""

    type: str | None = None
    message_id: Id = None
    anonymous_id: Id = None
    user_id: Id = None
    previous_id: Id = None
    group_id: Id = None
    event: str | None = None
    name: str | None = None
    properties: dict[str, Any] = {}
    traits: dict[str, Any] = {}
    context: dict[str, Any] = {}
    timestamp: str | int | float | None = None
    sent_at: str | int | float | None = None
    write_key: str | None = None


class Batch(msgspec.Struct, rename="camel"):
    """`/v1/batch`: the messages, raw so each is sized and judged on its own."""

    batch: list[msgspec.Raw]
    context: dict[str, Any] = {}
    sent_at: str | int | float | None = None
    write_key: str | None = None


class Envelope(msgspec.Struct, rename="camel"):
    """Just the write key of a body, for finding the source before anything else."""

    write_key: str | None = None


@dataclass(frozen=True)
class Clock:
    """When the request arrived, and the client's `sentAt` for the clock-skew correction."""

    received_at: datetime
    sent_at: str | int | float | None = None


_message = msgspec.json.Decoder(Message)
_batch = msgspec.json.Decoder(Batch)
_envelope = msgspec.json.Decoder(Envelope)
_anything = msgspec.json.Decoder()


def decode_message(raw: bytes) -> Message:
    """One message; malformed JSON or a wrongly typed field is a 400, as at Segment."""
    message = _decode(_message, raw)
    # The message is kept whole beside the event, but the typed decoder skips unknown fields
    # unread: their bytes must be valid too (UTF-8, numbers a float holds).
    _decode(_anything, raw)
    return message


def decode_batch(raw: bytes) -> Batch:
    return _decode(_batch, raw)


def body_write_key(raw: bytes) -> str | None:
    """The `writeKey` in a body, if it has one (the body is judged later)."""
    try:
        return _envelope.decode(raw).write_key
    except msgspec.DecodeError:
        return None


def _decode(decoder: msgspec.json.Decoder[T], raw: bytes) -> T:
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        found = nonfinite.field_of(raw) or FieldError("(body)", str(exc))
        raise InputError(400, "invalid message", [found]) from None
    except msgspec.DecodeError as exc:
        raise nonfinite.malformed(raw, exc) from None
    except UnicodeDecodeError:
        raise InputError(
            400, "body is not valid UTF-8", [FieldError("(body)", "not UTF-8")]
        ) from None


def to_event(message: Message, *, kind: str, clock: Clock) -> schema.EventIn:
    """Our event for one message from a source of this kind; InputError when it cannot be one."""
    segment_type = message.type or ""
    if segment_type not in TYPES:
        raise InputError(400, "invalid message", [FieldError("type", "unknown message type")])
    traits = _traits(message)
    user = personal(traits)
    if message.user_id is not None:
        user["external_id"] = str(message.user_id)[:256]
    body: dict[str, Any] = {
        **_kind_and_name(message, traits),
        **_page(message),
        "event_id": event_id(message.message_id),
        "timestamp": corrected_time(message.timestamp, message.sent_at or clock.sent_at, clock),
        "user": user or None,
        "context": _context(message.context),
    }
    if kind == "server":
        body.update(_server_identity(message))
    return schema.decode_event(schema.encode({k: v for k, v in body.items() if v is not None}))


def _kind_and_name(message: Message, traits: dict[str, Any]) -> dict[str, Any]:
    """type, name and properties of our event for each Segment type."""
    if message.type == "track":
        return {"type": "track", "name": message.event, "properties": message.properties}
    if message.type in ("page", "screen"):
        return {"type": "page", "properties": message.properties}
    if message.type == "identify":
        return {"type": "identify", "properties": _impersonal(traits)}
    if message.type == "alias":
        previous = None if message.previous_id is None else pii.sha256(str(message.previous_id))
        return {"type": "track", "name": "segment.alias", "properties": {"previous_id": previous}}
    group = {"group_id": message.group_id, "traits": _impersonal(message.traits)}
    return {"type": "track", "name": "segment.group", "properties": group}


def _page(message: Message) -> dict[str, Any]:
    """url, referrer and title: the page event's own properties first, then context.page."""
    page = _dict(message.context.get("page"))
    own = message.properties if message.type == "page" else {}
    url = _text(own.get("url")) or _text(page.get("url"))
    title = _text(own.get("title")) or _text(page.get("title"))
    if message.type == "screen":
        title = message.name or title
    return {
        "url": with_campaign(url, _dict(message.context.get("campaign"))),
        "referrer": _text(own.get("referrer")) or _text(page.get("referrer")),
        "title": title,
    }


def _context(context: dict[str, Any]) -> dict[str, Any] | None:
    mapped = {"ip": _text(context.get("ip")), "user_agent": _text(context.get("userAgent"))}
    kept = {k: v for k, v in mapped.items() if v}
    return kept or None


def _server_identity(message: Message) -> dict[str, Any]:
    """What only a server source may say: which visitor, and which firstparty user."""
    out: dict[str, Any] = {}
    if message.anonymous_id is not None and str(message.anonymous_id):
        out["visitor_id"] = visitor_id(str(message.anonymous_id))
    if message.user_id is not None and _USER_ID.match(str(message.user_id)):
        out["user_id"] = str(message.user_id)
    return out


def event_id(message_id: Id) -> str | None:
    """The messageId as our event id; one that does not fit is hashed, so retries still match."""
    if message_id is None or str(message_id) == "":
        return None
    text = str(message_id)
    return text if _EVENT_ID.match(text) else "sha256:" + pii.sha256(text)


def visitor_id(anonymous_id: str) -> str:
    """An anonymousId as a visitor id: as is when it is one of ours (a relayed fp_id), else a
    stable 24-char hash: never kept in clear."""
    if _VISITOR_ID.match(anonymous_id):
        return anonymous_id
    return "s_" + hashlib.sha256(anonymous_id.encode()).hexdigest()[:22]


def corrected_time(
    timestamp: str | int | float | None, sent_at: str | int | float | None, clock: Clock
) -> str | int | float | None:
    """Segment's skew correction: the client's time moved by (receivedAt - sentAt)."""
    if timestamp is None or sent_at is None:
        return timestamp
    try:
        stated = prepare.parse_timestamp(timestamp)
        sent = prepare.parse_timestamp(sent_at)
        return (stated + (clock.received_at - sent)).isoformat()
    except (ValueError, OverflowError, OSError):  # a moved time out of range, too
        return timestamp  # left for prepare to refuse with its own message


def with_campaign(url: str | None, campaign: dict[str, Any]) -> str | None:
    """The url with context.campaign as utm_* parameters, where the url lacks them."""
    if not url or not campaign:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    present = {key.lower() for key, _ in parse_qsl(parts.query)}
    extra = {
        utm: _text(campaign.get(key))
        for key, utm in _CAMPAIGN.items()
        if utm not in present and _text(campaign.get(key))
    }
    if not extra:
        return url
    query = "&".join(q for q in (parts.query, urlencode(extra)) if q)
    return urlunsplit(parts._replace(query=query))


def _traits(message: Message) -> dict[str, Any]:
    """The person's traits: context.traits, overridden by an identify's own traits."""
    own = message.traits if message.type == "identify" else {}
    return {**_dict(message.context.get("traits")), **own}


def personal(traits: dict[str, Any]) -> dict[str, str]:
    """Our `user` fields from Segment's traits; a value we cannot normalise is left out."""
    address = _dict(traits.get("address"))
    first = _text(traits.get("firstName")) or _text(traits.get("first_name"))
    last = _text(traits.get("lastName")) or _text(traits.get("last_name"))
    name = _text(traits.get("name"))
    if name and not (first or last) and " " in name.strip():
        first, _, last = name.strip().partition(" ")
    candidates = {
        "email": _text(traits.get("email")),
        "phone": _text(traits.get("phone")),
        "first_name": first,
        "last_name": last,
        "date_of_birth": (_text(traits.get("birthday")) or "")[:10] or None,
        "gender": _text(traits.get("gender")),
        **{ours: _text(address.get(theirs)) for theirs, ours in _ADDRESS.items()},
    }
    # A value too long for our schema is left out here; one that cannot be normalised is
    # dropped at the door with a warning (collect.prepare), like any event's.
    return {k: v for k, v in candidates.items() if v and len(v) <= 256}


def _impersonal(traits: dict[str, Any]) -> dict[str, Any]:
    """Traits other than the personal ones: the few that name no one in clear, every other
    text or number hashed ("sha256:..."), objects and lists dropped."""
    kept: dict[str, Any] = {}
    for key, value in traits.items():
        if key in _PERSONAL:
            continue
        if key in _CLEAR_TRAITS:
            kept[key] = value
        elif (text := _text(value)) is not None:
            kept[key] = "sha256:" + pii.sha256(text)
    return kept


def record(raw: dict[str, Any]) -> dict[str, Any]:
    """The message as kept with the event: no write key, no personal traits, ids hashed."""
    kept = {k: v for k, v in raw.items() if k not in ("writeKey", "_metadata")}
    if kept.get("anonymousId") is not None and str(kept["anonymousId"]):
        kept["anonymousId"] = visitor_id(str(kept["anonymousId"]))
    for key in ("userId", "previousId"):
        if kept.get(key) is not None and not _USER_ID.match(str(kept[key])):
            kept[key] = "sha256:" + pii.sha256(str(kept[key]))
    if isinstance(kept.get("traits"), dict):
        kept["traits"] = _impersonal(kept["traits"])
    context = _dict(kept.get("context"))
    if isinstance(context.get("traits"), dict):
        kept["context"] = {**context, "traits": _impersonal(context["traits"])}
    return kept


def merged_context(batch_context: dict[str, Any], message: Message) -> Message:
    """A batch's own context applies to each of its messages; the message's fields win."""
    if not batch_context:
        return message
    return msgspec.structs.replace(message, context={**batch_context, **message.context})


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None
