"""Personal data: normalised per the platforms' rules and SHA-256 hashed at the door.

Clear values never reach a table or a log: `hash_user` turns the `user` object of an event into
the hashes the platforms need, and only those are stored. The keys:

    em          email: trimmed, lowercased                          (Meta, TikTok, Google)
    em_google   email with Google's gmail rule (dots dropped in gmail.com local parts)
    ph          phone: E.164 digits without "+"                     (Meta)
    ph_e164     phone: E.164 with "+"                               (TikTok, Google)
    fn, ln      first/last name: lowercased, letters only
    ct          city: lowercased, letters only
    st          state/region: lowercased, letters and digits only
    zp          postal code: lowercased, no spaces (US: first 5 digits)
    country     ISO 3166-1 alpha-2, lowercased
    db          date of birth: YYYYMMDD
    ge          gender: "f" or "m"
    external_id the caller's id for the person, trimmed

A value that already is a SHA-256 hex digest is kept as is (never hashed twice).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Mapping

import phonenumbers

HASHED = re.compile(r"^[a-f0-9]{64}$")
USER_FIELDS = (
    "email",
    "phone",
    "first_name",
    "last_name",
    "city",
    "state",
    "zip",
    "country",
    "date_of_birth",
    "gender",
    "external_id",
)


class InvalidValue(ValueError):
    """A personal-data value that cannot be normalised (the message says why)."""


def sha256(value: str) -> str:
    """SHA-256 of the UTF-8 bytes, lowercase hex; a value already hashed is returned as is."""
    if HASHED.match(value):
        return value
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def keyed_hash(secret: str, value: str) -> str:
    """HMAC-SHA256 with the server's secret: finds a value again without storing it."""
    return hmac.new(secret.encode(), value.encode("utf-8"), hashlib.sha256).hexdigest()


def normalise_email(raw: str) -> str:
    email = raw.strip().lower()
    if email.count("@") != 1 or email.startswith("@") or email.endswith("@") or " " in email:
        raise InvalidValue("is not an email address")
    return email


def google_email(email: str) -> str:
    """Google's rule: for gmail.com and googlemail.com, dots in the local part are dropped."""
    local, domain = email.split("@")
    if domain in ("gmail.com", "googlemail.com"):
        local = local.replace(".", "")
    return f"{local}@{domain}"


def normalise_phone(raw: str, default_region: str = "US") -> str:
    """E.164 with "+" (e.g. "+16505551212"), or InvalidValue."""
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        raise InvalidValue("is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidValue("is not a valid phone number")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _letters(raw: str) -> str:
    text = unicodedata.normalize("NFKC", raw).strip().lower()
    return "".join(ch for ch in text if ch.isalpha())


def _alnum(raw: str) -> str:
    return "".join(ch for ch in raw.strip().lower() if ch.isalnum())


def _zip(raw: str) -> str:
    value = raw.strip().lower().replace(" ", "").replace("-", "")
    return value[:5] if re.fullmatch(r"\d{9}", value) else value


def _date_of_birth(raw: str) -> str:
    digits = re.sub(r"\D", "", raw)
    if len(digits) != 8:
        raise InvalidValue("must be a date, YYYY-MM-DD")
    return digits


def _gender(raw: str) -> str:
    value = raw.strip().lower()[:1]
    if value not in ("f", "m"):
        raise InvalidValue('must be "f" or "m"')
    return value


def _country(raw: str) -> str:
    value = raw.strip().lower()
    if not re.fullmatch(r"[a-z]{2}", value):
        raise InvalidValue("must be an ISO 3166-1 alpha-2 code, e.g. US")
    return value


def hash_user(user: Mapping[str, str], default_region: str = "US") -> dict[str, str]:
    """The stored form of an event's `user`: hashes only. Raises InvalidValue(field: message)."""
    out: dict[str, str] = {}
    for field, raw in user.items():
        if not raw:
            continue
        try:
            _hash_field(out, field, raw, default_region)
        except InvalidValue as exc:
            raise InvalidValue(f"user.{field}: {exc}") from None
    return out


# The stored key of each user field (phone: a caller's own hash is taken to be of E.164 with "+").
KEYS = {
    "email": "em",
    "phone": "ph_e164",
    "first_name": "fn",
    "last_name": "ln",
    "city": "ct",
    "state": "st",
    "zip": "zp",
    "country": "country",
    "date_of_birth": "db",
    "gender": "ge",
    "external_id": "external_id",
}


def _hash_field(out: dict[str, str], field: str, raw: str, region: str) -> None:
    digest = raw.strip().lower()
    if HASHED.match(digest) and field in KEYS:  # hashed by the caller already: never hash twice
        out[KEYS[field]] = digest
        return
    if field == "email":
        email = normalise_email(raw)
        out["em"] = sha256(email)
        if google_email(email) != email:
            out["em_google"] = sha256(google_email(email))
    elif field == "phone":
        e164 = normalise_phone(raw, region)
        out["ph"] = sha256(e164[1:])
        out["ph_e164"] = sha256(e164)
    elif field in ("first_name", "last_name", "city"):
        key = {"first_name": "fn", "last_name": "ln", "city": "ct"}[field]
        out[key] = sha256(_letters(raw))
    elif field == "state":
        out["st"] = sha256(_alnum(raw))
    elif field == "zip":
        out["zp"] = sha256(_zip(raw))
    elif field == "country":
        out["country"] = sha256(_country(raw))
    elif field == "date_of_birth":
        out["db"] = sha256(_date_of_birth(raw))
    elif field == "gender":
        out["ge"] = sha256(_gender(raw))
    elif field == "external_id":
        out["external_id"] = sha256(raw.strip())
    else:
        raise InvalidValue("is not a known user field")
