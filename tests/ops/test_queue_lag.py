"""Issue 14: queue lag on /metrics, the age of the longest-waiting due delivery (workers scale on
it, docs/deployment.md), read from the outbox at each scrape."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from firstparty.delivery.outbox import DeliveryStatus
from firstparty.store.models import deliveries
from tests.conftest import AppClient
from tests.delivery.outbox import add_events

GAUGE = re.compile(r"^firstparty_delivery_lag_seconds (\S+)$", re.M)


async def lag(app: AppClient) -> float:
    r = await app.http.get("/metrics")
    assert r.status_code == 200
    found = GAUGE.search(r.text)
    assert found, r.text
    return float(found.group(1))


def wait_since(app: AppClient, pk: str, status: DeliveryStatus, seconds: float) -> None:
    """This event's delivery is in `status`, due (or its lease ended) `seconds` ago (or ahead)."""
    when = datetime.now(UTC) - timedelta(seconds=seconds)
    with app.engine.begin() as conn:
        conn.execute(
            sa.update(deliveries)
            .where(deliveries.c.event_pk == pk)
            .values(status=status, next_attempt_at=when)
        )


async def test_no_due_work_is_no_lag(app_client: AppClient) -> None:
    assert await lag(app_client) == 0
    waiting, done = add_events(app_client.engine, ["fake"], 2)
    wait_since(app_client, waiting, DeliveryStatus.PENDING, -600)  # backing off: not due yet
    wait_since(app_client, done, DeliveryStatus.DELIVERED, 3600)  # finished: not work
    assert await lag(app_client) == 0


async def test_lag_is_the_age_of_the_oldest_due_delivery(app_client: AppClient) -> None:
    newer, older, lease_ended, future = add_events(app_client.engine, ["fake"], 4)
    wait_since(app_client, newer, DeliveryStatus.PENDING, 30)
    wait_since(app_client, older, DeliveryStatus.PENDING, 300)
    wait_since(app_client, future, DeliveryStatus.PENDING, -3600)
    wait_since(app_client, lease_ended, DeliveryStatus.DELIVERED, 7200)
    first = await lag(app_client)
    assert 300 <= first < 3600
    # A dead worker's claim whose lease ran out is due again (the sweeper takes it): it counts.
    wait_since(app_client, lease_ended, DeliveryStatus.INFLIGHT, 900)
    assert 900 <= await lag(app_client) < 3600
    wait_since(app_client, lease_ended, DeliveryStatus.INFLIGHT, -10)  # a live lease: not due
    assert 300 <= await lag(app_client) < 900
