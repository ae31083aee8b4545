"""The OpenAPI 3.1 document: schemas generated from the msgspec wire types, paths listed here.

A test checks that every mounted route is documented, so a new endpoint cannot ship without it.
"""

from __future__ import annotations

import re
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
# Answers every operation of a kind can give, beyond those listed with it (`_complete`).
_MORE_ERRORS = {
    "304": "Not modified (its ETag matches If-None-Match)",
    "400": "Malformed JSON",
    "401": "Missing or wrong credentials",
    "403": "Refused: origin not allowed, form expired, or the admin UI is off",
    "404": "Not found",
    "409": "Conflict: the source lives in the config file, or the destination cannot send",
    "413": "Body too large: refused unread (Content-Length) or at the limit while streaming",
    "422": "A malformed field, named in `details`",
    "429": "Rate limited; see Retry-After",
    "502": "The SMS provider failed; the code was not sent or not checked",
    "503": "Unavailable; retry after Retry-After",
}
_ANSWERS: dict[tuple[str, str], tuple[str, ...]] = {
    ("/v1/otp/start", "post"): ("400", "401", "403", "413", "422", "429", "502", "503"),
    ("/v1/otp/verify", "post"): ("400", "401", "403", "413", "422", "429", "502", "503"),
    ("/v1/admin/events", "get"): ("422",),
    ("/v1/admin/events/{id}", "get"): ("404",),
    ("/v1/admin/tracks", "get"): ("422",),
    ("/v1/admin/tracks/{id}", "get"): ("404",),
    ("/v1/admin/privacy/export", "get"): ("422",),
    ("/v1/admin/replay", "post"): ("400", "413", "422"),
    ("/v1/admin/privacy/erase", "post"): ("400", "413", "422"),
    ("/admin/login", "get"): ("403",),
    ("/admin/login", "post"): ("401", "403", "413", "429"),
    ("/admin/logout", "post"): ("403", "413"),
    ("/admin/events/{id}", "get"): ("403", "404"),
    ("/admin/deliveries", "get"): ("403", "422"),
    ("/admin/alerts", "get"): ("422",),
    ("/admin/replay", "post"): ("403", "413", "422"),
    ("/admin/sources", "post"): ("403", "409", "413", "422"),
    ("/admin/destinations/test", "post"): ("403", "404", "409", "413"),
    ("/admin/destinations/new", "get"): ("404",),
    ("/admin/destinations/edit", "get"): ("404",),
    ("/admin/destinations/save", "post"): ("403", "404", "409", "413", "422"),
    ("/admin/destinations/state", "post"): ("403", "404", "409", "413", "422"),
    ("/readyz", "get"): ("503",),
    ("/fp.js", "get"): ("304",),
    ("/fp.{digest}.js", "get"): ("304",),
    ("/metrics", "get"): ("401",),
    ("/segment/v1/m", "post"): ("413",),
    ("/segment/v1/projects/{write_key}/settings", "get"): ("404",),
    ("/demo/", "get"): ("404",),
    ("/demo/events.json", "get"): ("404",),
}


def _preflight() -> dict[str, Any]:
    return {
        "summary": "CORS preflight: allowed for the origins of the key's source",
        "parameters": [{"name": "key", "in": "query", "schema": {"type": "string"}}],
        "responses": {"204": {"description": "Allowed"}, "403": {"description": "Not allowed"}},
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
                "422": {"description": "A malformed field, named", **_json(_ref("ErrorBody"))},
                "429": {
                    "description": "Too many wrong tokens from this address: see Retry-After",
                    **_json(_ref("ErrorBody")),
                },
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


def _csv(summary: str) -> dict[str, Any]:
    """A CSV download of the admin web UI (behind the session cookie)."""
    return {
        "get": {
            "summary": summary,
            "tags": ["admin UI (HTML)"],
            "responses": {
                "200": {"description": "CSV", "content": {"text/csv": {}}},
                "303": {"description": "To /admin/login when not signed in"},
            },
        }
    }


def document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [
            schema.EventIn,
            schema.Accepted,
            schema.ErrorBody,
            schema.InternalErrorBody,
            schema.BatchItemError,
            _BatchDoc,
        ],
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
            "List events", ["name", "event_id", "visitor_id", "user_id", "source", *filters]
        ),
        "/v1/admin/events/{id}": _admin_op("One event with its outgoing requests", []),
        "/v1/admin/tracks": _admin_op(
            "List outgoing requests (a body over 16,384 bytes left out, marked truncated)",
            ["status", "destination", "event_id", *filters],
        ),
        "/v1/admin/tracks/{id}": _admin_op("One outgoing request with its whole body", []),
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
        "/admin": {
            "get": {
                "summary": "To /admin/ (a relative redirect)",
                "tags": ["admin UI (HTML)"],
                "responses": {"308": {"description": "To /admin/"}},
            }
        },
        "/admin/logout": _page("Sign out", "post"),
        "/admin/": _page("Admin UI: events, newest first"),
        "/admin/events/{id}": _page("Admin UI: one event with its deliveries and visitor"),
        "/admin/deliveries": _page("Admin UI: outgoing requests"),
        "/admin/failures": _page("Admin UI: failed deliveries by destination and reason"),
        "/admin/replay": _page("Admin UI: re-queue failed deliveries", "post"),
        "/admin/reports": _page("Admin UI: events per day, conversions, delivery success"),
        "/admin/audiences": _page(
            "Admin UI: audiences, their rules, size over time, coverage and last syncs"
        ),
        "/admin/audiences/sync": _page("Admin UI: sync one audience now (field `name`)", "post"),
        "/admin/live": _page("Admin UI: events as they arrive, then their deliveries"),
        "/admin/alerts": _page(
            "Admin UI: alert rules and settings, each alert's state, the messages sent"
        ),
        "/admin/audit": _page("Admin UI: the audit log"),
        "/admin/reports/{name}.csv": _csv("Admin UI: one report's numbers as CSV"),
        "/admin/reports/acquisition": _page(
            "Admin UI: conversions by channel and campaign, first and last touch"
        ),
        "/admin/reports/delivery-health": _page(
            "Admin UI: delivery outcomes by error code, skips, latency per destination"
        ),
        "/admin/reports/delivery-health.csv": _csv("Admin UI: delivery health as CSV"),
        "/admin/reports/match-quality": _page(
            "Admin UI: identifier coverage per destination and the platforms' verdicts"
        ),
        "/admin/reports/match-quality.csv": _csv("Admin UI: match quality as CSV"),
        "/admin/reports/funnels": {
            **_page("Admin UI: the funnels"),
            **_page("Admin UI: save a funnel", "post"),
        },
        "/admin/reports/funnels/{name}": _page("Admin UI: one funnel, step by step"),
        "/admin/reports/funnels/{name}/delete": _page("Admin UI: delete a saved funnel", "post"),
        "/admin/reports/funnels/{name}/recompute": _page(
            "Admin UI: recompute a funnel's kept counts at the next round", "post"
        ),
        "/admin/live/stream": {
            "get": {
                "summary": "Admin UI: the live page's server-sent events (`update` messages)",
                "tags": ["admin UI (HTML)"],
                "responses": {
                    "200": {"description": "An event stream", "content": {"text/event-stream": {}}},
                    "303": {"description": "To /admin/login when not signed in"},
                },
            }
        },
        "/admin/live.js": _page("Admin UI: the live page's script"),
        "/admin/sources": {
            **_page("Admin UI: sources, their key prefixes and states"),
            **_page("Admin UI: rotate, disable, enable or delete a database source", "post"),
        },
        "/admin/destinations": _page("Admin UI: destinations and whether each can send"),
        "/admin/destinations/test": _page(
            "Admin UI: send a test event, show the request and the answer", "post"
        ),
        "/admin/destinations/new": _page("Admin UI: the form adding a destination of a type"),
        "/admin/destinations/edit": _page("Admin UI: the form changing a stored destination"),
        "/admin/destinations/save": _page(
            "Admin UI: add or change a stored destination (validated; nothing saved on error)",
            "post",
        ),
        "/admin/destinations/state": _page(
            "Admin UI: disable, enable or delete a stored destination", "post"
        ),
        "/healthz": _simple("Alive"),
        "/readyz": _simple("Database and queue reachable"),
        "/metrics": _simple("Prometheus metrics", "text/plain"),
        "/openapi.json": _simple("This document"),
        "/fp.js": _simple("The browser tracker (cached 5 minutes)", "text/javascript"),
        "/fp.{digest}.js": _simple(
            "The browser tracker by content hash (cached a year)", "text/javascript"
        ),
        **segment.openapi_paths(),
        "/demo": _redirect("The demo page, at /demo/"),
        "/demo/": _simple("The demo page (when `demo = true`)", "text/html"),
        "/demo/events.json": _simple("The demo visitor's own events, newest first"),
    }
    _complete(paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": "firstparty", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _redirect(summary: str) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": {"308": {"description": summary}}}}


_PREFLIGHTED = ("/v1/events", "/v1/batch", "/v1/otp/", "/segment/v1/")  # CORS like /v1/events


def _complete(paths: dict[str, Any]) -> None:
    """What every operation shares, added in one place: its path parameters, the preflight of
    each collect path, the answers of `_ANSWERS`, a 413 on each body, and the 500 of a crash."""
    crash = {"description": "Internal error; `error_id` names its log line"}
    crash.update(_json(_ref("InternalErrorBody")))
    for path, item in paths.items():
        if path.startswith(_PREFLIGHTED) and "post" in item:
            item["options"] = _preflight()
        for method, op in item.items():
            answers = op.setdefault("responses", {})
            for code in _ANSWERS.get((path, method), ()):
                answers.setdefault(code, {"description": _MORE_ERRORS[code]})
            if method == "post" and not path.startswith("/segment/"):
                answers.setdefault("413", {"description": _MORE_ERRORS["413"]})
            answers.setdefault("500", crash)
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            op["parameters"] = [
                *op.get("parameters", []),
                *(_path_parameter(name) for name in _PARAM.findall(path) if name not in declared),
            ]


_PARAM = re.compile(r"\{(\w+)\}")


def _path_parameter(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


class _BatchDoc(msgspec.Struct):
    """`{"events": [...]}`: each event judged on its own."""

    events: list[schema.EventIn]
