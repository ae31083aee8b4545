"""Numbers no engine stores, named: `1e999` (valid JSON, beyond a float) and `NaN`/`Infinity`.

msgspec refuses both without saying where (`$[...][...]`); the refusal is only worth naming the
field, so the body is read again here, on the error path alone, by Python's parser, which turns
them into non-finite floats.
"""

from __future__ import annotations

import json
import math
from typing import Any

from firstparty.errors import FieldError, InputError

_MAX_DEPTH = 64  # deeper bodies are refused for their depth elsewhere


def malformed(raw: bytes, exc: Exception) -> InputError:
    """A 422 naming the field of a non-finite number; otherwise the 400 of malformed JSON."""
    found = field_of(raw)
    if found is None:
        return InputError(400, f"malformed JSON: {exc}")
    return InputError(422, "validation failed", [found])


def field_of(raw: bytes) -> FieldError | None:
    """The first number in `raw` that is not finite (`1e999`, `NaN`, `-Infinity`), if any."""
    try:
        data = json.loads(raw.decode("utf-8"))  # strict: no lone surrogates to name
    except (ValueError, RecursionError):
        return None
    return _walk(data, "", 0)


def _walk(value: Any, path: str, depth: int) -> FieldError | None:
    if isinstance(value, float) and not math.isfinite(value):
        return FieldError(path or "(body)", "number out of range (NaN and Infinity are not JSON)")
    if depth > _MAX_DEPTH:
        return None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, inner in items:
        if (found := _walk(inner, f"{path}.{key}" if path else str(key), depth + 1)) is not None:
            return found
    return None
