"""Operator pages: the sources and their keys; the destinations (the config file's, read-only,
and those added here, stored in the database) with a test-event button.

Thin handlers over the services the CLI uses (`collect.keys`, `delivery.probe`): the same
rules and messages in both. Every change is a POST carrying the session's CSRF token, made by
the operator role (`admin._operator_only`), and written to the audit log once done; a new key
is shown once, on the page that made it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from firstparty.collect import keys
from firstparty.delivery import probe
from firstparty.destinations import book, registry, stored
from firstparty.destinations.base import DestinationSettings
from firstparty.destinations.book import DestinationBook
from firstparty.errors import ConfigError
from firstparty.operators import audit
from firstparty.runtime import Runtime
from firstparty.web import admin, destination_form

ACTIONS = ("rotate", "disable", "enable", "delete")


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def sources_page(request: Request) -> Response:
    return await _sources(request, {})


async def source_action(request: Request) -> Response:
    """rotate, disable, enable or delete one database source, then the list again."""
    form = await admin._form(request)
    runtime = _runtime(request)
    name, action = form.get("name", ""), form.get("action", "")
    where = {"settings": runtime.settings, "engine": runtime.engine, "name": name}
    if action not in ACTIONS:
        return admin._error(request, 422, f"action: one of {', '.join(ACTIONS)}")
    try:
        done = await asyncio.to_thread(_act, action, where)
    except ConfigError as exc:
        return await _sources(request, {"error": str(exc)}, 409)
    await _audit(request, audit.Action("source_" + action), name)
    return await _sources(request, done)


async def _audit(
    request: Request, action: audit.Action, subject: str, detail: dict[str, Any] | None = None
) -> None:
    """The audit row of a change just made (these services keep their own transactions)."""
    await asyncio.to_thread(
        audit.write,
        _runtime(request).engine,
        actor=admin.principal(request).actor,
        action=action,
        subject=subject,
        detail=detail or {},
    )


def _act(action: str, where: dict[str, Any]) -> dict[str, Any]:
    name = where["name"]
    if action == "rotate":
        return {"done": f"New write key of {name} (shown once):", "key": keys.rotate(**where)}
    if action == "delete":
        keys.delete(**where)
        return {"done": f"Deleted {name}; its events stay."}
    state = keys.SourceState(action + "d")
    keys.set_state(**where, state=state)
    return {"done": f"{name} is {state}; every server follows within seconds."}


async def _sources(request: Request, outcome: dict[str, Any], status: int = 200) -> Response:
    runtime = _runtime(request)
    views = await asyncio.to_thread(keys.listing, settings=runtime.settings, engine=runtime.engine)
    context = {"sources": views, "error": None, "done": None, "key": None, **outcome}
    return admin._render(request, "admin_sources.html", context, status)


async def destinations_page(request: Request) -> Response:
    return await _destinations(request, {})


async def test_event(request: Request) -> Response:
    """Send one synthetic event to a destination (the config file's or a stored one) and show
    the exchange."""
    form = await admin._form(request)
    runtime = _runtime(request)
    adapter = runtime.adapters.get(form.get("name", ""))
    if adapter is None:
        return admin._error(request, 404, "No such destination.")
    found = adapter.settings
    problem = runtime.destinations.problems.get(found.name)
    if problem is not None:
        return await _destinations(request, {"error": f"{found.name} cannot send: {problem}"}, 409)
    try:
        result = await probe.send_test_event(
            found,
            delivery=runtime.settings.delivery,
            code=form.get("test_event_code") or None,
            live=form.get("live") == "on",
        )
    except ConfigError as exc:
        return await _destinations(request, {"error": str(exc)}, 409)
    outcome = {"mode": result.mode, "ok": result.ok}
    await _audit(request, audit.Action.DESTINATION_TEST, found.name, outcome)
    return await _destinations(request, {"probe": result})


async def _destinations(request: Request, outcome: dict[str, Any], status: int = 200) -> Response:
    runtime = _runtime(request)
    book = runtime.destinations
    rows = [_row(book, d, "config", "enabled") for d in runtime.settings.destinations]
    views = await asyncio.to_thread(stored.listing, engine=runtime.engine)
    for view in views:
        shadowed = view.name in book.config_names
        found = book.adapters.get(view.name)
        settings = found.settings if found is not None and not shadowed else None
        rows.append(_row(book, settings, "database", view.state, view, shadowed))
    context = {
        "destinations": rows,
        "types": registry.picker_order(),
        "error": None,
        "done": None,
        "probe": None,
        "confirm": None,
        **outcome,
    }
    return admin._render(request, "admin_destinations.html", context, status)


def _row(
    book: DestinationBook,
    found: DestinationSettings | None,
    kept_in: str,
    state: str,
    view: stored.StoredView | None = None,
    shadowed: bool = False,
) -> dict[str, Any]:
    name = view.name if view is not None else found.name if found is not None else ""
    return {
        "name": name,
        "type": view.type if view is not None else found.type if found is not None else "",
        "kept_in": kept_in,
        "state": "shadowed by the config file" if shadowed else state,
        "problem": book.problems.get(name) if not shadowed else None,
        # An audience destination takes no events: no test event (audiences are synced instead).
        "live": found is not None and state == "enabled" and found.type in registry.ADAPTERS,
        "needs_code": found is not None
        and "test_event_code" in type(found).model_fields
        and not getattr(found, "test_event_code", None),
    }


async def new_destination(request: Request) -> Response:
    """The add form for the type picked on the list (a GET form: no JavaScript needed)."""
    kind = request.query_params.get("type", "")
    if kind not in registry.ADAPTERS:
        return admin._error(request, 404, f"No destination type {kind!r}.")
    return _form_page(request, kind=kind, name="", values={}, creating=True)


async def edit_destination(request: Request) -> Response:
    runtime = _runtime(request)
    name = request.query_params.get("name", "")
    try:
        view = await asyncio.to_thread(stored.get, engine=runtime.engine, name=name)
    except stored.StoredError as exc:
        return admin._error(request, exc.status, str(exc))
    values = destination_form.values(view)
    kept = [k for k, v in view.entry.items() if v == stored.KEPT]
    return _form_page(request, kind=view.type, name=name, values=values, kept=kept)


async def save_destination(request: Request) -> Response:
    """Add or change a stored destination; refused with every problem listed, nothing saved."""
    form = await admin._form(request)
    runtime = _runtime(request)
    kind, name, creating = form.get("type", ""), form.get("name", ""), form.get("creating") == "1"
    if kind not in registry.ADAPTERS:
        return admin._error(request, 422, f"type: unknown destination type {kind!r}")
    entry, problems = destination_form.entry(kind, name, form)
    kept = [] if creating else await _kept(runtime, name)
    shown = {k: v for k, v in form.items() if k not in stored.secret_fields(kind)}

    def again(problems: list[str], status: int) -> Response:
        return _form_page(
            request,
            kind=kind,
            name=name,
            values=shown,
            creating=creating,
            kept=kept,
            problems=problems,
            status=status,
        )

    if problems:
        return again(problems, 422)
    try:
        await asyncio.to_thread(
            stored.save,
            settings=runtime.settings,
            engine=runtime.engine,
            entry=entry,
            creating=creating,
        )
    except stored.StoredError as exc:
        return again(exc.problems, exc.status)
    await asyncio.to_thread(runtime.destinations.reload)
    done_action = audit.Action.DESTINATION_CREATE if creating else audit.Action.DESTINATION_UPDATE
    await _audit(request, done_action, name, {"type": kind})
    verb = "Added" if creating else "Saved"
    done = f"{verb} {name}: every server and worker uses it within {book.REFRESH_SECONDS:.0f} s."
    return await _destinations(request, {"done": done})


async def _kept(runtime: Runtime, name: str) -> list[str]:
    try:
        view = await asyncio.to_thread(stored.get, engine=runtime.engine, name=name)
    except stored.StoredError:
        return []
    return [k for k, v in view.entry.items() if v == stored.KEPT]


def _form_page(
    request: Request,
    *,
    kind: str,
    name: str,
    values: dict[str, str],
    creating: bool = False,
    kept: list[str] | None = None,
    problems: list[str] | None = None,
    status: int = 200,
) -> Response:
    context = {
        "kind": kind,
        "name": name,
        "fields": destination_form.fields(kind),
        "values": values,
        "creating": creating,
        "kept": kept or [],
        "problems": problems or [],
    }
    return admin._render(request, "admin_destination_form.html", context, status)


async def destination_action(request: Request) -> Response:
    """disable, enable or delete a stored destination (delete asks to confirm first)."""
    form = await admin._form(request)
    runtime = _runtime(request)
    name, action = form.get("name", ""), form.get("action", "")
    if action not in DESTINATION_ACTIONS:
        return admin._error(request, 422, f"action: one of {', '.join(DESTINATION_ACTIONS)}")
    if action == "delete" and form.get("confirmed") != "yes":
        return await _destinations(request, {"confirm": name})
    where = {"settings": runtime.settings, "engine": runtime.engine, "name": name}
    try:
        done = await asyncio.to_thread(_destination_act, action, where)
    except stored.StoredError as exc:
        return await _destinations(request, {"error": str(exc)}, exc.status)
    await asyncio.to_thread(runtime.destinations.reload)
    await _audit(request, audit.Action("destination_" + action), name)
    return await _destinations(request, {"done": done})


def _destination_act(action: str, where: dict[str, Any]) -> str:
    name = where["name"]
    if action == "delete":
        stored.delete(**where)
        return f"Deleted {name}; its pending events wait (replay them if it comes back)."
    state = stored.DestinationState(action + "d")
    stored.set_state(**where, state=state)
    return f"{name} is {state}; every server and worker follows within seconds."


DESTINATION_ACTIONS = ("disable", "enable", "delete")


routes = [
    Route("/admin/sources", admin._signed_in(sources_page), methods=["GET"]),
    Route("/admin/sources", admin._operator_only(source_action), methods=["POST"]),
    Route("/admin/destinations", admin._signed_in(destinations_page), methods=["GET"]),
    Route("/admin/destinations/test", admin._operator_only(test_event), methods=["POST"]),
    Route("/admin/destinations/new", admin._operator_only(new_destination), methods=["GET"]),
    Route("/admin/destinations/edit", admin._operator_only(edit_destination), methods=["GET"]),
    Route("/admin/destinations/save", admin._operator_only(save_destination), methods=["POST"]),
    Route("/admin/destinations/state", admin._operator_only(destination_action), methods=["POST"]),
]
