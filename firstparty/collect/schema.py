"""The wire format of `/v1/events` and `/v1/batch`, decoded and validated in one pass by msgspec."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from firstparty.collect import nonfinite
from firstparty.errors import FieldError, InputError

Short = Annotated[str, msgspec.Meta(max_length=256)]
Text = Annotated[str, msgspec.Meta(max_length=4096)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
PersonId = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]  # firstparty's own ids
ConsentValue = Literal["granted", "denied"]


class User(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Personal data; hashed before anything is stored (see identity.pii)."""

    email: Short | None = None
    phone: Short | None = None
    first_name: Short | None = None
    last_name: Short | None = None
    city: Short | None = None
    state: Short | None = None
    zip: Short | None = None
    country: Short | None = None
    date_of_birth: Short | None = None
    gender: Short | None = None
    external_id: Short | None = None


class Consent(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Consent Mode v2 signals."""

    ad_user_data: ConsentValue | None = None
    ad_personalization: ConsentValue | None = None
    ad_storage: ConsentValue | None = None
    analytics_storage: ConsentValue | None = None


class Context(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Request context; ip and user_agent are honoured from server sources only."""

    ip: Short | None = None
    user_agent: Text | None = None
    # The ad pixels' cookies, one field each of `platforms.PIXEL_COOKIES` (tests/test_platforms.py).
    fbp: Short | None = None
    fbc: Short | None = None
    ttp: Short | None = None
    ga: Short | None = None
    gcl_aw: Short | None = None
    # Server sources: click ids a CRM captured earlier, e.g. {"gclid": "...", "clicked_at": "..."}.
    click_ids: dict[str, Short] | None = None
    # GA4 sessions from the `_ga_<container>` cookies (`platforms.GA_SESSION`), read by fp.js.
    ga_session: Short | None = None


class EventIn(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    type: Literal["page", "track", "identify"]
    name: Name | None = None
    event_id: EventId | None = None
    timestamp: str | int | float | None = None
    url: Text | None = None
    referrer: Text | None = None
    title: Text | None = None
    properties: dict[str, Any] = {}
    user: User | None = None
    user_id: PersonId | None = None  # server sources only: the person, as firstparty knows them
    visitor_id: PersonId | None = None  # server sources only: a browser's fp_id visitor relayed
    consent: Consent | None = None
    context: Context | None = None


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    events: list[msgspec.Raw]


class ErrorDetail(msgspec.Struct):
    field: str
    message: str


class Accepted(msgspec.Struct, omit_defaults=True):
    """Stored; `warnings` names each field dropped because it could not be used."""

    ok: bool
    id: str
    event_id: str
    visitor_id: str | None
    duplicate: bool = False
    warnings: list[ErrorDetail] = []
    # "bot": a robot's event from a source with `bots = "drop"`; nothing was stored (the id
    # names no row). Absent for a stored event.
    dropped: str | None = None


class ErrorBody(msgspec.Struct):
    error: str
    details: list[ErrorDetail] = []


class InternalErrorBody(msgspec.Struct):
    """A 500: `error_id` is the id of its log line, to quote in a report."""

    error: str
    details: list[ErrorDetail]
    error_id: str


class BatchItemError(msgspec.Struct):
    ok: bool
    error: str
    details: list[ErrorDetail] = []
    error_id: str | None = None  # an internal error: the id of its log line


class BatchOut(msgspec.Struct):
    results: list[Accepted | BatchItemError]


_event_decoder = msgspec.json.Decoder(EventIn)
_batch_decoder = msgspec.json.Decoder(BatchIn)
_PATH = re.compile(r" - at `\$\.?(.*)`$")
# A JSON escape of NUL, not preceded by an escaped backslash (`\\u0000` is the text "\u0000").
_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def without_nul(body: bytes) -> bytes:
    """The JSON body with every NUL character taken out of its strings, keys and values alike.

    PostgreSQL's text and JSONB cannot hold NUL; it is cleaned at the door on every engine, so
    an event is stored the same everywhere. (Raw NUL bytes are not JSON: decoding refuses them.)
    """
    return _NUL.sub(rb"\1", body) if b"\\u0000" in body else body


def decode_event(raw: bytes) -> EventIn:
    """Decode one event; malformed JSON is a 400, a schema violation a 422 naming the field."""
    try:
        event = _event_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise _invalid(raw, exc) from None
    except msgspec.DecodeError as exc:
        raise nonfinite.malformed(raw, exc) from None
    except UnicodeDecodeError:
        raise InputError(
            400, "body is not valid UTF-8", [FieldError("(body)", "not UTF-8")]
        ) from None
    if event.type == "track" and not event.name:
        raise InputError(422, "validation failed", [FieldError("name", "required for track")])
    if (wrong := unstorable(event.properties, "properties", 1)) is not None:
        raise InputError(422, "validation failed", [wrong])
    return event


MAX_DEPTH = 32
_INT64 = range(-(2**63), 2**63)


def unstorable(value: Any, path: str, depth: int) -> FieldError | None:
    """The first value no engine stores alike: nested deeper than MAX_DEPTH, or an integer
    beyond 64 bits (PostgreSQL's JSONB keeps it, SQLite and MariaDB do not)."""
    if depth > MAX_DEPTH:
        return FieldError(path, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        return FieldError(path, "integer beyond 64 bits")
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, inner in items:
        if (found := unstorable(inner, f"{path}.{key}", depth + 1)) is not None:
            return found
    return None


def decode_batch(raw: bytes) -> list[bytes]:
    """The raw events of a batch, each to be judged on its own."""
    try:
        batch = _batch_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise _invalid(raw, exc) from None
    except msgspec.DecodeError as exc:
        raise nonfinite.malformed(raw, exc) from None
    except UnicodeDecodeError:
        raise InputError(
            400, "body is not valid UTF-8", [FieldError("(body)", "not UTF-8")]
        ) from None
    return [bytes(item) for item in batch.events]


def _invalid(raw: bytes, exc: msgspec.ValidationError) -> InputError:
    # The typed decoder stops at the first wrong type, before it sees the JSON is broken.
    try:
        msgspec.json.decode(raw)
    except msgspec.DecodeError as broken:
        return nonfinite.malformed(raw, broken)
    except UnicodeDecodeError:  # in a key the typed decoder refused before reading it
        return InputError(400, "body is not valid UTF-8", [FieldError("(body)", "not UTF-8")])
    found = every_error(raw, EventIn) or [_one_error(str(exc))]
    return InputError(422, "validation failed", found)


def _one_error(message: str) -> FieldError:
    """msgspec's message (it stops at the first error) as a FieldError naming the field."""
    match = _PATH.search(message)
    field = match.group(1) if match else ""
    field = re.sub(r"\[(\d+)\]", r".\1", field).lstrip(".") or "(body)"
    text = _PATH.sub("", message)
    if text.startswith("Object missing required field"):
        missing = text.split("`")[1]
        field = f"{field}.{missing}" if field != "(body)" else missing
        text = "required"
    elif text.startswith("Object contains unknown field"):
        unknown = text.split("`")[1]
        field = f"{field}.{unknown}" if field != "(body)" else unknown
        text = "unknown field"
    return FieldError(field, _in_words(text))


def every_error(raw: bytes, kind: type[msgspec.Struct]) -> list[FieldError]:
    """Every field that does not fit `kind`, not only the first (the slow path of a 422)."""
    data = msgspec.json.decode(raw)
    if not isinstance(data, dict):
        return [FieldError("(body)", "expected a JSON object")]
    return _struct_errors(data, kind, "")


def _struct_errors(data: dict[str, Any], kind: type[msgspec.Struct], at: str) -> list[FieldError]:
    fields = {f.encode_name: f for f in msgspec.structs.fields(kind)}
    found = [FieldError(at + key, "unknown field") for key in data if key not in fields]
    for name, info in fields.items():
        if name not in data:
            if info.required:
                found.append(FieldError(at + name, "required"))
            continue
        inner = _struct_type(info.type)
        if inner is not None and isinstance(data[name], dict):
            found += _struct_errors(data[name], inner, f"{at}{name}.")
            continue
        try:
            msgspec.convert(data[name], type=info.type)
        except msgspec.ValidationError as exc:
            one = _one_error(str(exc))
            where = at + name + ("" if one.field == "(body)" else "." + one.field)
            found.append(FieldError(where, one.message))
    return found


def _struct_type(annotation: Any) -> type[msgspec.Struct] | None:
    """The Struct in `Struct | None`, if that is what the annotation is."""
    for option in getattr(annotation, "__args__", (annotation,)):
        if isinstance(option, type) and issubclass(option, msgspec.Struct):
            return option
    return None


_LENGTH = re.compile(r"^Expected `str` of length (<=|>=) (\d+)$")


def _in_words(text: str) -> str:
    """msgspec's "Expected `str` of length <= 128" as "at most 128 characters"."""
    found = _LENGTH.match(text)
    if found is None:
        return text
    bound = "at most" if found.group(1) == "<=" else "at least"
    count = int(found.group(2))
    return f"expected a string of {bound} {count} character{'' if count == 1 else 's'}"


def encode(value: Any) -> bytes:
    return msgspec.json.encode(value)


def error_body(error: InputError) -> bytes:
    details = [ErrorDetail(d.field, d.message) for d in error.details]
    return msgspec.json.encode(ErrorBody(error.error, details))
