"""Helpers for the Segment API tests: Basic auth headers, gzip, stored events."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import sqlalchemy as sa

from firstparty.store import models as m
from tests.conftest import AppClient


def basic(key: str) -> dict[str, str]:
    """Segment's auth: the write key as Basic user name, empty password."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def gzipped(body: Any) -> bytes:
    return gzip.compress(json.dumps(body).encode())


def events(client: AppClient) -> list[dict[str, Any]]:
    """Stored events, oldest first."""
    query = sa.select(m.events).order_by(m.events.c.received_at, m.events.c.id)
    with client.engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]
