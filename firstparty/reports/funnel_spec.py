"""A funnel's definition: ordered steps, each a page or an event name with property filters.

One step is one line of text, the same in the config file (`[[funnels]] steps = [...]`) and in
the admin form (one step per line):

    page /pricing                   a page view whose URL path is /pricing
    page /blog/*                    ... whose path starts with /blog/
    event AddToCart                 a track event of that name
    event Purchase where value >= 100 and plan == "pro"

A filter compares an event property (`properties.<name>`, dots for nested objects) with a
number, a "double-quoted string", true or false, by ==, !=, >, >=, <, <= or `contains` (text).
Numbers compare as numbers ("49.90" is a number, as at the door). `parse_step` raises
`ValueError` with a message that names what is wrong; nothing here touches a database.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from firstparty.collect import amounts

MAX_STEPS = 10
MAX_FILTERS = 5
MAX_WINDOW_HOURS = 90 * 24
NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_EVENT_NAME = re.compile(r"^[^\s]{1,128}$")
_PATH = re.compile(r"^/[^\s?#]{0,500}$")
_FILTER = re.compile(
    r"^\s*(?P<field>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+){0,3})\s*"
    r"(?P<op>==|!=|>=|<=|>|<|contains)\s*"
    r'(?P<value>"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?|true|false)\s*$'
)
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


@dataclass(frozen=True)
class Filter:
    field: str
    op: str
    value: str | int | float | bool

    def holds(self, properties: Mapping[str, Any]) -> bool:
        found = _lookup(properties, self.field)
        if found is None:
            return False
        if self.op == "contains":
            return isinstance(found, str) and str(self.value) in found
        wanted = self.value
        if isinstance(wanted, bool) or isinstance(found, bool):
            same = isinstance(found, bool) and isinstance(wanted, bool) and found is wanted
            return {"==": same, "!=": not same}.get(self.op, False)
        if isinstance(wanted, int | float):
            number = amounts.number_of(found)
            return number is not None and _COMPARE[self.op](number, wanted)
        if self.op in ("==", "!="):
            return _COMPARE[self.op](str(found), wanted)
        return isinstance(found, str) and _COMPARE[self.op](found, wanted)

    def __str__(self) -> str:
        shown = json.dumps(self.value) if not isinstance(self.value, bool) else str(self.value)
        return f"{self.field} {self.op} {shown.lower() if isinstance(self.value, bool) else shown}"


@dataclass(frozen=True)
class Step:
    kind: str  # page | event
    target: str  # a path (a trailing * matches a prefix) or an event name
    filters: tuple[Filter, ...] = ()

    def matches(self, *, type_: str, name: str, path: str | None, props: Mapping[str, Any]) -> bool:
        if self.kind == "page":
            if type_ != "page" or path is None:
                return False
            if self.target.endswith("*"):
                hit = path.startswith(self.target[:-1])
            else:
                hit = path.rstrip("/") == self.target.rstrip("/") or path == self.target
        else:
            hit = type_ == "track" and name == self.target
        return hit and all(f.holds(props) for f in self.filters)

    def __str__(self) -> str:
        where = " and ".join(str(f) for f in self.filters)
        return f"{self.kind} {self.target}" + (f" where {where}" if where else "")


@dataclass(frozen=True)
class Funnel:
    name: str
    steps: tuple[Step, ...]
    window_hours: int
    saved: bool = False  # from the admin UI (else the config file)


def parse_step(text: str) -> Step:
    """One step from its line of text; ValueError naming what is wrong."""
    line = text.strip()
    kind, _, rest = line.partition(" ")
    if kind not in ("page", "event"):
        raise ValueError(f"{line[:80]!r}: a step starts with `page` or `event`")
    target, _, where = rest.strip().partition(" where ")
    target = target.strip()
    if kind == "page" and not _PATH.match(target):
        raise ValueError(f"{line[:80]!r}: a page step names a path such as /pricing")
    if kind == "event" and not _EVENT_NAME.match(target):
        raise ValueError(f"{line[:80]!r}: an event step names an event such as Purchase")
    filters = tuple(_filter(part, line) for part in where.split(" and ")) if where else ()
    if len(filters) > MAX_FILTERS:
        raise ValueError(f"{line[:80]!r}: at most {MAX_FILTERS} filters in a step")
    return Step(kind, target, filters)


def parse(name: str, steps: list[str], window_hours: int, *, saved: bool = False) -> Funnel:
    """A whole funnel; ValueError naming the funnel and what is wrong."""
    if not NAME.match(name):
        raise ValueError(f"funnel name {name[:64]!r}: letters, digits, _ . - (at most 64)")
    if not 2 <= len(steps) <= MAX_STEPS:
        raise ValueError(f"funnel {name!r}: between 2 and {MAX_STEPS} steps, one a line")
    if not 1 <= window_hours <= MAX_WINDOW_HOURS:
        raise ValueError(f"funnel {name!r}: window_hours between 1 and {MAX_WINDOW_HOURS}")
    parsed = []
    for number, text in enumerate(steps, 1):
        try:
            parsed.append(parse_step(text))
        except ValueError as exc:
            raise ValueError(f"funnel {name!r}, step {number}: {exc}") from None
    return Funnel(name, tuple(parsed), window_hours, saved)


def _filter(text: str, line: str) -> Filter:
    found = _FILTER.match(text)
    if found is None:
        raise ValueError(
            f"{line[:80]!r}: a filter reads `property op value`, such as value >= 100 or "
            'plan == "pro" (op: == != > >= < <= contains)'
        )
    raw = found["value"]
    value: str | int | float | bool
    if raw in ("true", "false"):
        value = raw == "true"
    elif raw.startswith('"'):
        value = json.loads(raw)
    else:
        value = float(raw) if "." in raw else int(raw)
    if found["op"] == "contains" and not isinstance(value, str):
        raise ValueError(f'{line[:80]!r}: contains takes a "quoted" text')
    return Filter(found["field"], found["op"], value)


def _lookup(properties: Mapping[str, Any], field: str) -> Any:
    found: Any = properties
    for part in field.split("."):
        if not isinstance(found, Mapping):
            return None
        found = found.get(part)
    return found
