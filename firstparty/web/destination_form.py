"""The add/edit form of a destination, generated from its type's settings schema.

Each field of the schema becomes an input: a checkbox for a bool, a select for a Literal, a number
input for a number, a password input for a secret (left empty: the stored one is kept; `env:NAME`
reads the server's environment), a textarea for a mapping or list (JSON, or `incoming = platform`
lines for a mapping of names), a text input for the rest. `entry()` turns the posted form back into
a `[[destinations]]` entry, which `destinations.stored` validates as the config file's.
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from firstparty.destinations import registry, stored

FIXED = ("name", "type")  # asked apart: the name is chosen once, the type before the form


@dataclass(frozen=True)
class FormField:
    name: str
    widget: Literal["text", "number", "checkbox", "select", "password", "textarea"]
    required: bool
    default: str  # shown as the placeholder (or the checkbox's state)
    options: tuple[str, ...] = ()
    choices: tuple[Any, ...] = ()  # a select's values as the schema types them (0, "skip")
    lines: bool = False  # a mapping of names: `incoming = platform` lines are accepted


def fields(kind: str) -> list[FormField]:
    """The inputs of this destination type, in the schema's order."""
    model = registry.ADAPTERS[kind].settings_model
    return [_field(n, f) for n, f in model.model_fields.items() if n not in FIXED]


def _field(name: str, info: FieldInfo) -> FormField:
    kind = _bare(info.annotation)
    required = info.is_required()
    default = "" if required or info.default is None else _shown(info.default)
    if kind is SecretStr:
        return FormField(name, "password", required, "")
    if kind is bool:
        return FormField(name, "checkbox", required, default)
    if get_origin(kind) is Literal:
        choices = get_args(kind)
        options = tuple(str(o) for o in choices)
        return FormField(name, "select", required, default, options, choices)
    if kind in (int, float):
        return FormField(name, "number", required, default)
    if get_origin(kind) in (dict, list):
        lines = get_args(kind) == (str, str)
        return FormField(name, "textarea", required, default, lines=lines)
    return FormField(name, "text", required, default)


def _bare(annotation: Any) -> Any:
    """`X | None` -> X."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else ""
    if isinstance(value, dict | list):
        return json.dumps(value) if value else ""
    return str(value)


def entry(kind: str, name: str, form: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The posted form as a destination entry, and what could not be read (empty: none)."""
    found: dict[str, Any] = {"name": name.strip(), "type": kind}
    problems: list[str] = []
    for field in fields(kind):
        raw = form.get(field.name, "")
        if field.widget == "checkbox":
            found[field.name] = raw == "on"
        elif field.widget == "textarea" and raw.strip():
            try:
                found[field.name] = _structured(raw, field.lines)
            except ValueError as exc:
                problems.append(f"{field.name}: {exc}")
        elif field.widget == "select" and raw in field.options:
            found[field.name] = field.choices[field.options.index(raw)]
        elif raw.strip():
            found[field.name] = raw.strip()
    return found, problems


def _structured(raw: str, lines: bool) -> Any:
    """JSON, or (a mapping of names) `incoming = platform` lines."""
    text = raw.strip()
    if text.startswith(("{", "[")) or not lines:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    mapping: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        incoming, sep, platform = line.partition("=")
        if not sep or not incoming.strip() or not platform.strip():
            raise ValueError(f"line {number}: write incoming = platform (e.g. Lead = Lead)")
        mapping[incoming.strip()] = platform.strip()
    return mapping


def values(view: stored.StoredView) -> dict[str, str]:
    """What the edit form shows of a stored destination (a secret: `env:NAME` or nothing)."""
    shown: dict[str, str] = {}
    by_name = {f.name: f for f in fields(view.type)}
    for key, value in view.entry.items():
        field = by_name.get(key)
        if field is None or value == stored.KEPT:
            continue
        if field.lines and isinstance(value, dict):
            shown[key] = "\n".join(f"{k} = {v}" for k, v in value.items())
        elif isinstance(value, dict | list):
            shown[key] = json.dumps(value)
        elif isinstance(value, bool):
            shown[key] = "on" if value else ""
        else:
            shown[key] = str(value)
    return shown
