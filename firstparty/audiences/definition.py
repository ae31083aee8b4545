"""`[[audiences]]` in the config file: who belongs to an audience and where it is kept in sync.

    [[audiences]]
    name = "leads-not-buyers"
    destinations = ["meta-leads"]          # `[[destinations]]` of an audience type
    membership_days = 90                   # a member's latest event is at most this old
    every_minutes = 60                     # sync schedule; 0: only on demand

    [[audiences.rules]]
    did = "Lead"
    within_days = 30
    where = ["value >= 100", 'plan == "pro"']

    [[audiences.rules]]
    did_not = "Purchase"
    within_days = 90

    [[audiences.rules]]
    first_touch = { utm_source = "google", click_id = "gclid" }

    [[audiences.rules]]
    verified_phone = true

Every rule must hold. Parsed here with pydantic (unknown keys refused, each error named); the
membership queries are in `members.py`.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["AudienceSettings", "Condition", "Rule", "parse_condition"]

NAME = r"^[A-Za-z0-9_.\-]{1,64}$"
MAX_DAYS = 540  # Google Customer Match's longest membership; events are kept 400 days anyway
FIRST_TOUCH_KEYS = ("utm_source", "utm_medium", "utm_campaign", "click_id")
_CONDITION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(==|!=|>=|<=|>|<)\s*(.+?)\s*$")
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Condition:
    """`property op value`, over one event's `properties`; a missing property never holds."""

    prop: str
    op: str
    value: str | float | bool

    def holds(self, properties: Any) -> bool:
        if not isinstance(properties, dict) or self.prop not in properties:
            return False
        found = properties[self.prop]
        if isinstance(self.value, bool) or isinstance(found, bool):
            same = isinstance(found, bool) and isinstance(self.value, bool)
            return same and self.op in ("==", "!=") and _OPERATORS[self.op](found, self.value)
        if isinstance(self.value, str):
            return isinstance(found, str) and _OPERATORS[self.op](found, self.value)
        if isinstance(found, int | float):
            return _OPERATORS[self.op](float(found), self.value)
        return False

    def __str__(self) -> str:
        return f"{self.prop} {self.op} {json.dumps(self.value)}"


def parse_condition(text: str) -> Condition:
    """`value >= 100`, `plan == "pro"`, `trial == true`; a ValueError says what is wrong."""
    found = _CONDITION.match(text)
    if found is None:
        raise ValueError(
            f"condition {text!r} must read `property op value` with op one of "
            '==, !=, >=, <=, >, < (e.g. `value >= 100` or `plan == "pro"`)'
        )
    prop, op, raw = found.groups()
    try:
        value = json.loads(raw)
    except ValueError:
        raise ValueError(
            f"condition {text!r}: {raw} is not a number, true/false or a "
            'double-quoted string (write plan == "pro")'
        ) from None
    if not isinstance(value, str | int | float | bool):
        raise ValueError(f"condition {text!r}: compare with a number, true/false or a string")
    if isinstance(value, bool) and op not in ("==", "!="):
        raise ValueError(f"condition {text!r}: true/false compares with == or != only")
    typed: str | float | bool = value if isinstance(value, bool | str) else float(value)
    return Condition(prop, op, typed)


class Rule(_Strict):
    """One condition on a person: an event done (or not) in a window, their first touch, or a
    verified phone. Exactly one of `did`, `did_not`, `first_touch`, `verified_phone`."""

    did: str | None = Field(default=None, min_length=1, max_length=128)
    did_not: str | None = Field(default=None, min_length=1, max_length=128)
    within_days: int | None = Field(default=None, ge=1, le=MAX_DAYS)
    where: list[str] = []  # property conditions on that event, all must hold
    first_touch: dict[str, str] | None = None
    verified_phone: bool | None = None

    @field_validator("where")
    @classmethod
    def _conditions_parse(cls, value: list[str]) -> list[str]:
        for text in value:
            parse_condition(text)
        return value

    @field_validator("first_touch")
    @classmethod
    def _touch_keys(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            unknown = sorted(set(value) - set(FIRST_TOUCH_KEYS))
            if unknown or not value:
                raise ValueError(
                    f"first_touch takes {', '.join(FIRST_TOUCH_KEYS)}"
                    + (f"; not {', '.join(unknown)}" if unknown else "")
                )
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Rule:
        kinds = [
            k
            for k in ("did", "did_not", "first_touch", "verified_phone")
            if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "a rule is exactly one of did, did_not, first_touch or verified_phone"
                + (f" (this one has {', '.join(kinds)})" if kinds else "")
            )
        event_rule = self.did is not None or self.did_not is not None
        if event_rule and self.within_days is None:
            raise ValueError("did / did_not need within_days (e.g. within_days = 30)")
        if not event_rule and (self.within_days is not None or self.where):
            raise ValueError("within_days and where go with did / did_not only")
        return self

    @property
    def event(self) -> str | None:
        return self.did if self.did is not None else self.did_not

    @property
    def conditions(self) -> list[Condition]:
        return [parse_condition(text) for text in self.where]

    def describe(self) -> str:
        """The rule in words, for the CLI and the admin page."""
        if self.event is not None:
            verb = "did" if self.did is not None else "did not do"
            where = f" where {' and '.join(self.where)}" if self.where else ""
            return f"{verb} {self.event}{where} in the last {self.within_days} days"
        if self.first_touch is not None:
            pairs = ", ".join(f"{k} = {v}" for k, v in sorted(self.first_touch.items()))
            return f"first touch with {pairs}"
        return "has a verified phone" if self.verified_phone else "has no verified phone"


class AudienceSettings(_Strict):
    """One `[[audiences]]` entry."""

    name: str = Field(pattern=NAME)
    description: str = ""
    rules: list[Rule] = Field(min_length=1)
    destinations: list[str] = []  # names of `[[destinations]]` of an audience type
    membership_days: int = Field(default=90, ge=1, le=MAX_DAYS)
    every_minutes: int = Field(default=60, ge=0, le=7 * 24 * 60)  # 0: on demand only
    # "granted": both ad_user_data and ad_personalization granted by the person's latest
    # consent; "not_denied": neither denied (sites without a consent banner, outside the EEA).
    consent: Literal["granted", "not_denied"] = "granted"

    @field_validator("destinations")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a destination is named twice")
        return value

    @property
    def lookback_days(self) -> int:
        """How far back events are read: the longest rule window, or the membership."""
        windows = [r.within_days for r in self.rules if r.within_days is not None]
        return max([self.membership_days, *windows])
