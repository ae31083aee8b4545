"""Which shard of a counter table a connection writes (`event_rollups`, `delivery_rollups`).

Every ingest transaction and every worker move adds to the same few rows (today's page views,
today's pending deliveries): one row each would make concurrent transactions wait on each
other's commit. Each database connection instead adds to its own shard, drawn once when the
connection is opened, and readers sum the shards.
"""

from __future__ import annotations

import random

from sqlalchemy.engine import Connection

SHARDS = 16


def of(conn: Connection) -> int:
    """This connection's shard, the same for its whole life (kept in its `info`)."""
    shard = conn.info.setdefault("rollup_shard", random.randrange(SHARDS))
    return int(shard)
