"""The audit log: who did what to which thing, written in the transaction of the change where the
service allows (operator changes, replays, erasures) and right after it otherwise.

`actor` is an operator's email, `ADMIN_TOKEN` (the break-glass sign-in), `API` (the admin API's
bearer token) or `CLI` (a command on the server). `detail` never holds a secret, a password or a
person's personal data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from firstparty.store.models import audit_log

ADMIN_TOKEN = "admin-token"
API = "api"
CLI = "cli"
MAX_TEXT = 254


class Action(StrEnum):
    """Everything the audit log records."""

    SIGN_IN = "sign_in"
    SIGN_IN_FAILED = "sign_in_failed"
    SIGN_OUT = "sign_out"
    REPLAY = "replay"
    ERASE = "erase"
    SOURCE_CREATE = "source_create"
    SOURCE_ROTATE = "source_rotate"
    SOURCE_DISABLE = "source_disable"
    SOURCE_ENABLE = "source_enable"
    SOURCE_DELETE = "source_delete"
    DESTINATION_CREATE = "destination_create"
    DESTINATION_UPDATE = "destination_update"
    DESTINATION_DISABLE = "destination_disable"
    DESTINATION_ENABLE = "destination_enable"
    DESTINATION_DELETE = "destination_delete"
    DESTINATION_TEST = "destination_test"
    AUDIENCE_SYNC = "audience_sync"
    FUNNEL_SAVE = "funnel_save"
    FUNNEL_DELETE = "funnel_delete"
    OPERATOR_CREATE = "operator_create"
    OPERATOR_DISABLE = "operator_disable"
    OPERATOR_ENABLE = "operator_enable"
    OPERATOR_SET_ROLE = "operator_set_role"
    OPERATOR_RESET_PASSWORD = "operator_reset_password"


@dataclass(frozen=True)
class Filters:
    action: Action | None = None
    actor: str | None = None
    before: int | None = None  # keyset cursor: rows with a smaller id


def record(
    conn: Connection,
    *,
    actor: str,
    action: Action,
    subject: str = "",
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """One audit row, in the caller's transaction."""
    conn.execute(
        sa.insert(audit_log).values(
            at=at or datetime.now(UTC),
            actor=actor[:MAX_TEXT],
            action=action.value,
            subject=subject[:MAX_TEXT],
            detail=detail or {},
        )
    )


def write(engine: Engine, **row: Any) -> None:
    """`record` in a transaction of its own (after a service that keeps its own)."""
    with engine.begin() as conn:
        record(conn, **row)


def page(engine: Engine, filters: Filters, limit: int) -> list[dict[str, Any]]:
    """The newest rows first, `limit` of them, older than the cursor."""
    table = audit_log.c
    query = sa.select(audit_log).order_by(table.id.desc()).limit(limit)
    if filters.action is not None:
        query = query.where(table.action == filters.action.value)
    if filters.actor:
        query = query.where(table.actor == filters.actor)
    if filters.before is not None:
        query = query.where(table.id < filters.before)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [{**row, "cursor": str(row["id"])} for row in rows]


def actors(engine: Engine) -> list[str]:
    """Everyone who appears in the log (for the filter's choices)."""
    query = sa.select(audit_log.c.actor).distinct().order_by(audit_log.c.actor).limit(500)
    with engine.connect() as conn:
        return [str(a) for a in conn.execute(query).scalars()]
