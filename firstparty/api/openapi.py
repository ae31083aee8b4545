"""The OpenAPI 3.1 document: schemas generated from the msgspec wire types, paths listed here.

A test checks that every mounted route is documented, so a new endpoint cannot ship without it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from firstparty import __version__
from firstparty.api import segment
from firstparty.collect import schema

_ERRORS = {
    "400": "Malformed JSON",
    "401": "Missing or unknown write key",
    "403": "Origin not allowed for this source",
    "413": "Body too large",
    "422": "Validation failed; `details` names each field",
    "429": "Rate limited; see Retry-After",
    "503": "Storage unavailable; retry",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema_: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema_}}}


def _errors(*codes: str) -> dict[str, Any]:
    return {c: {"description": _ERRORS[c], **_json(_ref("ErrorBody"))} for c in codes}


def _collect_op(summary: str, body: str, ok_code: str, ok: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": [
            {"name": "X-Write-Key", "in": "header", "schema": {"type": "string"}},
            {"name": "key", "in": "query", "schema": {"type": "string"}},
        ],
        "requestBody": {"required": True, **_json(_ref(body))},
        "responses": {
            ok_code: {
                "description": "Accepted; `warnings` names each field dropped (the event is kept)",
                **_json(_ref(ok)),
            },
            **_errors("400", "401", "403", "413", "422", "429", "503"),
        },
    }


def _admin_op(summary: str, params: list[str], method: str = "get") -> dict[str, Any]:
    return {
        method: {
            "summary": summary,
            "security": [{"bearer": []}],
            "parameters": [
                {"name": p, "in": "query", "schema": {"type": "string"}} for p in params
            ],
            "responses": {
                "200": {"description": "OK", **_json({"type": "object"})},
                "401": {"description": "Missing or wrong admin token", **_json(_ref("ErrorBody"))},
            },
        }
    }


def _simple(summary: str, media: str = "application/json") -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {"200": {"description": "OK", "content": {media: {}}}},
        }
    }


def _page(summary: str, method: str = "get") -> dict[str, Any]:
    """A page of the admin web UI (HTML, behind the session cookie; POSTs carry a CSRF token)."""
    return {
        method: {
            "summary": summary,
            "tags": ["admin UI (HTML)"],
            "responses": {
                "200": {"description": "HTML page", "content": {"text/html": {}}},
                "303": {"description": "To /admin/login when not signed in"},
            },
        }
    }


def document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [schema.EventIn, schema.Accepted, schema.ErrorBody, schema.BatchItemError, _BatchDoc],
        ref_template="#/components/schemas/{name}",
    )
    components["BatchOut"] = {
        "type": "object",
        "properties": {
            "results": {
                "type": "array",
                "items": {"anyOf": [_ref("Accepted"), _ref("BatchItemError")]},
            }
        },
    }
    filters = ["since", "until", "limit", "cursor"]
    paths: dict[str, Any] = {
        "/v1/events": {"post": _collect_op("Collect one event", "EventIn", "202", "Accepted")},
        "/v1/batch": {"post": _collect_op("Collect many events", "_BatchDoc", "200", "BatchOut")},
        "/v1/otp/start": {
            "post": {
                "summary": "Send a one-time code by SMS",
                "responses": {"202": {"description": "Sent"}, **_errors("422", "429")},
            }
        },
        "/v1/otp/verify": {
            "post": {
                "summary": "Verify a code; links the visitor to a user",
                "responses": {"200": {"description": "Verified"}, **_errors("422", "429")},
            }
        },
        "/v1/admin/events": _admin_op(
            "List events", ["name", "visitor_id", "user_id", "source", *filters]
        ),
        "/v1/admin/events/{id}": _admin_op("One event with its outgoing requests", []),
        "/v1/admin/tracks": _admin_op(
            "List outgoing requests", ["status", "destination", "event_id", *filters]
        ),
        "/v1/admin/replay": _admin_op(
            "Re-send failed deliveries",
            ["destination", "since", "until", "event", "dry_run"],
            "post",
        ),
        "/v1/admin/privacy/export": _admin_op(
            "Everything held about one person, as JSON", ["user_id", "visitor_id", "phone", "email"]
        ),
        "/v1/admin/privacy/erase": _admin_op(
            "Erase one person (a user and its devices, or a visitor); the rows removed",
            ["user_id", "visitor_id", "phone", "email"],
            "post",
        ),
        "/admin/login": {
            **_page("Sign-in form of the admin UI"),
            **_page("Sign in with the admin token; sets the session cookie", "post"),
        },
        "/admin/logout": _page("Sign out", "post"),
        "/admin/": _page("Admin UI: events, newest first"),
        "/admin/events/{id}": _page("Admin UI: one event with its deliveries and visitor"),
        "/admin/deliveries": _page("Admin UI: outgoing requests"),
        "/admin/failures": _page("Admin UI: failed deliveries by destination and reason"),
        "/admin/replay": _page("Admin UI: re-queue failed deliveries", "post"),
        "/admin/reports": _page("Admin UI: events per day, conversions, delivery success"),
        "/healthz": _simple("Alive"),
        "/readyz": _simple("Database and queue reachable"),
        "/metrics": _simple("Prometheus metrics", "text/plain"),
        "/openapi.json": _simple("This document"),
        "/fp.js": _simple("The browser tracker (cached 5 minutes)", "application/javascript"),
        "/fp.{digest}.js": _simple(
            "The browser tracker by content hash (cached a year)", "application/javascript"
        ),
        **segment.openapi_paths(),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "firstparty", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


class _BatchDoc(msgspec.Struct):
    """`{"events": [...]}`: each event judged on its own."""

    events: list[schema.EventIn]
