"""The SHA-256 test vectors of destinations.md Appendix A, through the normalisers."""

from __future__ import annotations

import pytest

from firstparty.identity import pii

JOHN = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
PHONE_META = "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
US = "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"
BIRTH = "01acdbf6ec7b4f478a225f1a246e5d6767eeab1a7ffa17f025265b5b94f40f0c"
MARY = "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec"
PHONE_E164 = "1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8"
GMAIL_DOTLESS = "3586de92bb3636d0885a12eff961429a32e4ebd764b96f50d85d016f9338d586"


@pytest.mark.parametrize(
    ("normalised", "digest"),
    [
        ("john_smith@gmail.com", JOHN),
        ("16505551212", PHONE_META),
        ("us", US),
        ("19970216", BIRTH),
        ("mary", MARY),
        ("+16505551212", PHONE_E164),
        ("johnsmith@gmail.com", GMAIL_DOTLESS),
    ],
)
def test_sha256_of_each_normalised_vector(normalised: str, digest: str) -> None:
    assert pii.sha256(normalised) == digest


def test_email_is_trimmed_and_lowercased() -> None:
    hashed = pii.hash_user({"email": "John_Smith@Gmail.com "})
    assert hashed == {"em": JOHN}  # no dot in the local part: no separate Google hash


def test_phone_gives_meta_digits_and_e164_with_plus() -> None:
    hashed = pii.hash_user({"phone": "+1 (650) 555-1212"})
    assert hashed == {"ph": PHONE_META, "ph_e164": PHONE_E164}


def test_phone_without_country_code_uses_the_default_region() -> None:
    assert pii.hash_user({"phone": "(650) 555-1212"})["ph_e164"] == PHONE_E164


def test_country_date_of_birth_and_first_name() -> None:
    hashed = pii.hash_user({"country": "US", "date_of_birth": "1997-02-16", "first_name": " Mary"})
    assert hashed == {"country": US, "country_code": "US", "db": BIRTH, "fn": MARY}


def test_google_gmail_rule_drops_dots_in_the_local_part() -> None:
    hashed = pii.hash_user({"email": "john.smith@gmail.com"})
    assert hashed["em_google"] == GMAIL_DOTLESS
    assert hashed["em"] == pii.sha256("john.smith@gmail.com")


def test_a_hash_is_never_hashed_again() -> None:
    assert pii.sha256(JOHN) == JOHN
    assert pii.sha256(PHONE_E164) == PHONE_E164


@pytest.mark.parametrize(
    ("field", "key"),
    [
        ("email", "em"),
        ("phone", "ph_e164"),
        ("first_name", "fn"),
        ("last_name", "ln"),
        ("city", "ct"),
        ("state", "st"),
        ("zip", "zp"),
        ("country", "country"),
        ("date_of_birth", "db"),
        ("gender", "ge"),
        ("external_id", "external_id"),
    ],
)
def test_a_value_hashed_by_the_caller_is_kept_under_its_key(field: str, key: str) -> None:
    expected = {key: MARY, "ph": MARY} if field == "phone" else {key: MARY}
    assert pii.hash_user({field: MARY}) == expected


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("1997-02-16", "19970216"),
        ("19970216", "19970216"),
        ("1997/02/16", "19970216"),
        ("2/16/1997", "19970216"),  # Meta's own example
        ("1997-02-16T00:00:00.000Z", "19970216"),  # Segment's birthday
    ],
)
def test_dates_of_birth_are_parsed_strictly(raw: str, normalised: str) -> None:
    assert pii.hash_user({"date_of_birth": raw}) == {"db": pii.sha256(normalised)}


@pytest.mark.parametrize("raw", ["1997-02-30", "16/02/1997", "yesterday", "12345678", "2999-01-01"])
def test_a_date_of_birth_that_is_not_a_date_is_dropped(raw: str) -> None:
    assert pii.clean_user({"date_of_birth": raw, "first_name": "Mary"}) == (
        {"fn": MARY},
        {"date_of_birth": pii.clean_user({"date_of_birth": raw})[1]["date_of_birth"]},
    )


@pytest.mark.parametrize(
    ("state", "country", "code"),
    [
        ("California", None, "ca"),
        ("new york", "US", "ny"),
        ("CA", "US", "ca"),
        ("Bayern", "DE", "bayern"),
    ],
)
def test_us_state_names_become_their_codes(state: str, country: str | None, code: str) -> None:
    user = {"state": state} | ({"country": country} if country else {})
    assert pii.hash_user(user)["st"] == pii.sha256(code)


@pytest.mark.parametrize(
    ("raw", "country", "clear"),
    [("02139-4307", "US", "02139"), (" 02139 ", None, "02139"), ("sw1a  1aa", "GB", "SW1A 1AA")],
)
def test_postal_code_and_country_are_kept_in_clear_for_google(
    raw: str, country: str | None, clear: str
) -> None:
    user = pii.hash_user({"zip": raw} | ({"country": country.lower()} if country else {}))
    assert user["postal_code"] == clear
    assert user.get("country_code") == country


def test_clean_user_drops_what_it_cannot_use_and_says_why() -> None:
    user, dropped = pii.clean_user(
        {"email": "a b@example.com", "phone": "call me", "gender": "other", "first_name": "Mary"}
    )
    assert user == {"fn": MARY}
    assert set(dropped) == {"email", "phone", "gender"}


def test_an_upper_case_hash_is_kept_lowercased() -> None:
    assert pii.hash_user({"email": JOHN.upper()}) == {"em": JOHN}


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ({"email": "not-an-email"}, "user.email: is not an email address"),
        ({"phone": "12"}, "user.phone:"),
        ({"gender": "other"}, 'user.gender: must be "f" or "m"'),
        ({"shoe_size": MARY}, "user.shoe_size: is not a known user field"),
    ],
)
def test_bad_values_name_the_field(user: dict[str, str], message: str) -> None:
    with pytest.raises(pii.InvalidValue, match=message.replace("(", r"\(")):
        pii.hash_user(user)
