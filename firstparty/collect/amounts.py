"""Money and counts at the door: `value`, `price`, `quantity` as numbers, `currency` as ISO 4217.

Every platform documents these as numbers and an upper-case three-letter code; a numeric string
is refused (Meta, TikTok) or ignored (Google, GA4) there (destinations.md §6, "Values"). So a
numeric string ("49.90") becomes a number here, anything else unusable is dropped with a
warning, and the event is kept. The same holds inside product lists (`products`, Segment's;
`contents`, Meta's and TikTok's; `items`, GA4's), where `item_price` is a price too.
"""

from __future__ import annotations

import math
import re
from typing import Any

from firstparty.errors import FieldError

NUMBERS = ("value", "price", "quantity")
LISTS = ("products", "contents", "items")
ITEM_NUMBERS = ("price", "item_price", "quantity", "value")
_NUMERIC = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_CURRENCY = re.compile(r"[A-Z]{3}")


def clean(properties: dict[str, Any], warnings: list[FieldError]) -> dict[str, Any]:
    """The properties with numbers as numbers and the currency upper case; drops are warned."""
    out = dict(properties)
    _numbers(out, NUMBERS, "properties", warnings)
    if "currency" in out:
        currency = _currency(out.pop("currency"))
        if currency is None:
            warnings.append(FieldError("properties.currency", "must be a three-letter ISO code"))
        else:
            out["currency"] = currency
    for key in LISTS:
        if isinstance(out.get(key), list):
            out[key] = [
                _item(item, f"properties.{key}.{i}", warnings) for i, item in enumerate(out[key])
            ]
    return out


def _item(item: Any, where: str, warnings: list[FieldError]) -> Any:
    if not isinstance(item, dict):
        return item
    cleaned = dict(item)
    _numbers(cleaned, ITEM_NUMBERS, where, warnings)
    return cleaned


def _numbers(
    values: dict[str, Any], keys: tuple[str, ...], where: str, warnings: list[FieldError]
) -> None:
    for key in keys:
        if key not in values or values[key] is None:
            continue
        number = number_of(values[key])
        if number is None:
            del values[key]
            warnings.append(FieldError(f"{where}.{key}", "must be a number"))
        else:
            values[key] = number


def number_of(raw: Any) -> int | float | None:
    """A finite number, from a number or a numeric string ("49.90" -> 49.9, "2" -> 2)."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return raw if math.isfinite(raw) else None
    if not isinstance(raw, str) or not _NUMERIC.fullmatch(text := raw.strip()):
        return None
    if text.lstrip("+-").isdigit():
        return int(text)
    number = float(text)
    return number if math.isfinite(number) else None


def _currency(raw: Any) -> str | None:
    if not isinstance(raw, str):
        return None
    code = raw.strip().upper()
    return code if _CURRENCY.fullmatch(code) else None
