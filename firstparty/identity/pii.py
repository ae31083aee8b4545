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

Two keys hold clear values, because Google's enhanced conversions take them only in clear
(destinations.md §3b.4) and neither names a person on its own:

    postal_code postal code as Google wants it: trimmed, upper case; US: the first 5 digits
    country_code ISO 3166-1 alpha-2, upper case

A value that already is a SHA-256 hex digest is kept as is (never hashed twice); a phone hashed
by the caller is kept under both phone keys (its normalisation cannot be known).
`clean_user` drops a value it cannot normalise and says why; `hash_user` refuses it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, date, datetime

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


# Dates of birth: ISO (YYYY-MM-DD, also with a time after it, as Segment's `birthday`),
# YYYYMMDD, YYYY/MM/DD, and the US MM/DD/YYYY of Meta's own example ("2/16/1997").
_ISO_DATE = re.compile(r"(\d{4})[-/]?(\d{2})[-/]?(\d{2})(?:[T ][\d:.]+(?:Z|[+-][\d:]+)?)?")
_US_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")


def _date_of_birth(raw: str) -> str:
    text = raw.strip()
    if iso := _ISO_DATE.fullmatch(text):
        year, month, day = iso.groups()
    elif us := _US_DATE.fullmatch(text):
        month, day, year = us.groups()
    else:
        raise InvalidValue("must be a date, YYYY-MM-DD")
    try:
        born = date(int(year), int(month), int(day))
    except ValueError:
        raise InvalidValue("is not a real date") from None
    if born.year < 1900 or born > datetime.now(UTC).date():
        raise InvalidValue("is not a plausible date of birth")
    return born.strftime("%Y%m%d")


_GENDERS = {"f": "f", "female": "f", "woman": "f", "m": "m", "male": "m", "man": "m"}


def _gender(raw: str) -> str:
    value = _GENDERS.get(raw.strip().lower())
    if value is None:
        raise InvalidValue('must be "f" or "m" (or female/male)')
    return value


# US states, DC and territories by name: Meta wants the two-letter ANSI code (section 1.3).
US_STATES = {
    "alabama": "al", "alaska": "ak", "arizona": "az", "arkansas": "ar", "california": "ca",
    "colorado": "co", "connecticut": "ct", "delaware": "de", "districtofcolumbia": "dc",
    "florida": "fl", "georgia": "ga", "hawaii": "hi", "idaho": "id", "illinois": "il",
    "indiana": "in", "iowa": "ia", "kansas": "ks", "kentucky": "ky", "louisiana": "la",
    "maine": "me", "maryland": "md", "massachusetts": "ma", "michigan": "mi", "minnesota": "mn",
    "mississippi": "ms", "missouri": "mo", "montana": "mt", "nebraska": "ne", "nevada": "nv",
    "newhampshire": "nh", "newjersey": "nj", "newmexico": "nm", "newyork": "ny",
    "northcarolina": "nc", "northdakota": "nd", "ohio": "oh", "oklahoma": "ok", "oregon": "or",
    "pennsylvania": "pa", "rhodeisland": "ri", "southcarolina": "sc", "southdakota": "sd",
    "tennessee": "tn", "texas": "tx", "utah": "ut", "vermont": "vt", "virginia": "va",
    "washington": "wa", "westvirginia": "wv", "wisconsin": "wi", "wyoming": "wy",
    "puertorico": "pr", "guam": "gu", "usvirginislands": "vi", "americansamoa": "as",
    "northernmarianaislands": "mp",
}  # fmt: skip


def _state(raw: str, country: str | None) -> str:
    """Lowercase letters and digits; a US state's name becomes its two-letter code."""
    value = _alnum(raw)
    if country in (None, "us"):
        return US_STATES.get(value, value)
    return value


def postal_code(raw: str, country: str | None) -> str:
    """The postal code in clear as Google wants it: trimmed; US: 5 digits; else upper case."""
    value = " ".join(raw.split()).upper()
    us = re.fullmatch(r"(\d{5})(?:-?\d{4})?", value)
    if us and country in (None, "us"):
        return us.group(1)
    if not value or len(value) > 16 or not re.fullmatch(r"[A-Z0-9 -]+", value):
        raise InvalidValue("is not a postal code")
    return value


def _country(raw: str) -> str:
    value = raw.strip().lower()
    if not re.fullmatch(r"[a-z]{2}", value):
        raise InvalidValue("must be an ISO 3166-1 alpha-2 code, e.g. US")
    return value


def clean_user(
    user: Mapping[str, str], default_region: str = "US"
) -> tuple[dict[str, str], dict[str, str]]:
    """(the stored form of an event's `user`, {field: why it was dropped}).

    Hashes, plus `postal_code` and `country_code` in clear; a value that cannot be normalised
    is left out and named in the second dict.
    """
    out: dict[str, str] = {}
    dropped: dict[str, str] = {}
    country = _clear_country(user.get("country"))
    for field, raw in user.items():
        if not raw:
            continue
        try:
            _hash_field(out, field, raw, default_region, country)
        except InvalidValue as exc:
            dropped[field] = str(exc)
    return out, dropped


def hash_user(user: Mapping[str, str], default_region: str = "US") -> dict[str, str]:
    """`clean_user`, refusing instead of dropping: raises InvalidValue("field: message")."""
    out, dropped = clean_user(user, default_region)
    if dropped:
        field, message = next(iter(dropped.items()))
        raise InvalidValue(f"user.{field}: {message}")
    return out


def _clear_country(raw: str | None) -> str | None:
    """The stated country, lowercase alpha-2, when it is one (it steers state and postal code)."""
    if not raw:
        return None
    try:
        return _country(raw)
    except InvalidValue:
        return None


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


def _hash_field(
    out: dict[str, str], field: str, raw: str, region: str, country: str | None
) -> None:
    digest = raw.strip().lower()
    if HASHED.match(digest) and field in KEYS:  # hashed by the caller already: never hash twice
        out[KEYS[field]] = digest
        if field == "phone":  # which normalisation the caller hashed is unknown: send it to all
            out["ph"] = digest
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
        out["st"] = sha256(_state(raw, country))
    elif field == "zip":
        out["postal_code"] = postal_code(raw, country)
        out["zp"] = sha256(_zip(raw))
    elif field == "country":
        code = _country(raw)
        out["country"] = sha256(code)
        out["country_code"] = code.upper()
    elif field == "date_of_birth":
        out["db"] = sha256(_date_of_birth(raw))
    elif field == "gender":
        out["ge"] = sha256(_gender(raw))
    elif field == "external_id":
        out["external_id"] = sha256(raw.strip())
    else:
        raise InvalidValue("is not a known user field")
