"""Loading events for delivery: a batch is enriched in a few statements, exactly as one by one.

The data is a crowd of people on several devices each: visitors linked to users (some moving to
another user later), click ids of every kind and age, pixel cookies on their page views, one
heavy visitor with more page views than `CONTEXT_ROWS`, server events naming only the user,
events whose consent denies ad_user_data, and events carrying their own cookies and hashes.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from firstparty import event as core
from firstparty import ids, platforms
from firstparty.delivery import load
from firstparty.identity import attribution, users
from firstparty.store import db
from firstparty.store.models import click_ids, events
from tests.conftest import SECRET

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KINDS: dict[str, load.SourceKind] = {"www": "browser", "crm": "server"}
CLICK_KINDS = ("gclid", "fbclid", "ttclid", "msclkid", "ScCid", "epik", "wbraid")
BATCH = 200
MAX_STATEMENTS = 10


def test_two_hundred_events_load_in_a_few_statements_as_one_by_one(database_url: str) -> None:
    engine = db.create_engine(database_url, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            pks = Crowd(conn, random.Random(10)).build()
        with engine.connect() as conn, statements(conn) as seen:
            batch = load.load_events(conn, pks, kinds=KINDS)
        with engine.connect() as conn:
            alone = {pk: load.load_events(conn, [pk], kinds=KINDS)[pk] for pk in pks}
    finally:
        engine.dispose()

    assert len(seen) <= MAX_STATEMENTS, seen
    assert batch == alone
    assert sum(e.visitor_id is not None and len(e.click_ids) > 1 for e in batch.values()) > 50
    assert sum("ph" in e.user for e in batch.values()) > 50
    assert sum(e.user_id is not None and "ph" not in e.user for e in batch.values()) > 5


def test_one_event_alone_keeps_the_rules(sqlite_url: str) -> None:
    engine = db.create_engine(sqlite_url, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            crowd = Crowd(conn, random.Random(1))
            laptop_click = crowd.click("v_laptop", "gclid", T0)
            crowd.page("v_laptop", T0, fbp="fb.laptop", fbc="fbc.laptop")
            user_id = crowd.login("v_laptop", "+16175550100", T0 + timedelta(hours=1))
            crowd.login("v_phone", "+16175550100", T0 + timedelta(days=1))
            crowd.page("v_phone", T0 + timedelta(days=1), fbp="fb.phone")
            own = crowd.conversion("v_phone", user_id, T0 + timedelta(days=2), ga="GA1.own")
            denied = crowd.conversion("v_phone", user_id, T0 + timedelta(days=2), denied=True)
            crowd.flush()
        with engine.connect() as conn:
            found = load.load_events(conn, [own, denied], kinds=KINDS)
    finally:
        engine.dispose()

    assert found[own].click_ids == (laptop_click,)
    assert found[own].context == {"fbp": "fb.phone", "fbc": "fbc.laptop", "ga": "GA1.own"}
    assert found[own].user == users.phone_hashes("+16175550100")
    assert found[denied].user == {}


@contextlib.contextmanager
def statements(conn: sa.Connection) -> Iterator[list[str]]:
    """Every statement the connection's driver runs meanwhile.

    SQLite: the driver's own trace (load.py reads events through the raw sqlite3 cursor);
    elsewhere: each cursor execution SQLAlchemy makes.
    """
    seen: list[str] = []
    if conn.dialect.name == "sqlite":
        raw: Any = conn.connection.dbapi_connection
        raw.set_trace_callback(seen.append)
        try:
            yield seen
        finally:
            raw.set_trace_callback(None)
        return

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    sa.event.listen(conn, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(conn, "before_cursor_execute", record)


class Crowd:
    """People, their devices and what those devices did, written as ingest and identity do."""

    def __init__(self, conn: sa.Connection, rng: random.Random) -> None:
        self.conn = conn
        self.rng = rng
        self.clicks: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []

    def build(self) -> list[str]:
        """The whole crowd; the row ids of the `BATCH` conversions to load."""
        phones = [f"+1617555{n:04d}" for n in range(60)]
        visitors = [f"v_{n:03d}" for n in range(150)]
        for visitor_id in visitors:
            self.device(visitor_id)
        self.heavy("v_000")
        links = self.links(visitors, phones)
        pks = [self.someone(visitors, links) for _ in range(BATCH)]
        self.flush()
        return pks

    def device(self, visitor_id: str) -> None:
        """A few ad clicks and page views (with pixel cookies) over five months."""
        for _ in range(self.rng.randint(0, 4)):
            kind = self.rng.choice(CLICK_KINDS)
            self.click(visitor_id, kind, self.moment(0, 150), value=f"{kind}-{self.rng.random()}")
        for _ in range(self.rng.randint(0, 5)):
            cookies = {k: f"{k}.{visitor_id}.{self.rng.random()}" for k in self.cookies()}
            self.page(visitor_id, self.moment(0, 150), **cookies)

    def heavy(self, visitor_id: str) -> None:
        """More page views than `CONTEXT_ROWS` in the lookback: an older cookie stays unseen."""
        self.page(visitor_id, self.moment(100, 101), ttp="ttp.before-the-newest")
        for n in range(attribution.CONTEXT_ROWS + 20):
            self.page(visitor_id, T0 + timedelta(days=110, minutes=n), fbp=f"fbp.heavy.{n}")

    def links(self, visitors: list[str], phones: list[str]) -> dict[str, str]:
        """Two in three visitors verify a phone; one in five of those moves to another later."""
        linked: dict[str, str] = {}
        for visitor_id in visitors:
            if self.rng.random() < 2 / 3:
                when = self.moment(0, 120)
                linked[visitor_id] = self.login(visitor_id, self.rng.choice(phones), when)
                if self.rng.random() < 0.2:
                    later = when + timedelta(days=self.rng.uniform(1, 30))
                    linked[visitor_id] = self.login(visitor_id, self.rng.choice(phones), later)
        return linked

    def someone(self, visitors: list[str], links: dict[str, str]) -> str:
        """One conversion: a browser (known or not), a server naming the user, or nobody."""
        visitor_id: str | None = self.rng.choice(visitors)
        user_id = links.get(visitor_id or "")
        shape = self.rng.random()
        if shape < 0.2:
            visitor_id = None  # from a server, naming only the user
        elif shape < 0.25:
            visitor_id = user_id = None
        own = {k: f"{k}.own.{self.rng.random()}" for k in self.cookies() if self.rng.random() < 0.5}
        return self.conversion(
            visitor_id, user_id, self.moment(20, 160), denied=self.rng.random() < 0.1, **own
        )

    def cookies(self) -> list[str]:
        return [k for k in platforms.PIXEL_FIELDS if self.rng.random() < 0.5]

    def moment(self, first_day: float, last_day: float) -> datetime:
        return T0 + timedelta(days=self.rng.uniform(first_day, last_day))

    def login(self, visitor_id: str, phone: str, when: datetime) -> str:
        user_id = users.ensure(self.conn, secret=SECRET, e164=phone, now=when)
        users.link_visitor(self.conn, visitor_id=visitor_id, user_id=user_id, now=when)
        return user_id

    def click(
        self, visitor_id: str, kind: str, seen: datetime, *, value: str = "Cj0K-first"
    ) -> core.ClickId:
        row = {"visitor_id": visitor_id, "kind": kind, "value": value, "first_seen_at": seen}
        self.clicks.append(row)
        return core.ClickId(kind, value, seen)

    def page(self, visitor_id: str, when: datetime, **context: str) -> None:
        self.rows.append(self.event_row(visitor_id, None, when, "page", context, {}))

    def conversion(
        self,
        visitor_id: str | None,
        user_id: str | None,
        when: datetime,
        *,
        denied: bool = False,
        **context: str,
    ) -> str:
        consent = {"ad_user_data": "denied"} if denied else {"ad_user_data": "granted"}
        row = self.event_row(visitor_id, user_id, when, "track", context, consent)
        if self.rng.random() < 0.1:
            row["user"] = {"ph": "own-hash", "em": "own-email-hash"}
        self.rows.append(row)
        return str(row["id"])

    def event_row(
        self,
        visitor_id: str | None,
        user_id: str | None,
        when: datetime,
        type_: str,
        context: dict[str, str],
        consent: dict[str, str],
    ) -> dict[str, Any]:
        return {
            "id": ids.new_id(),
            "source": "www" if visitor_id else "crm",
            "event_id": ids.new_uuid(),
            "type": type_,
            "name": "Purchase" if type_ == "track" else "page",
            "occurred_at": when,
            "received_at": when,
            "visitor_id": visitor_id,
            "user_id": user_id,
            "request": {"properties": {"value": 10}},
            "response": {},
            "user": {},
            "context": context,
            "consent": consent,
        }

    def flush(self) -> None:
        """Write what was gathered in one statement per table."""
        if self.clicks:
            self.conn.execute(sa.insert(click_ids), self.clicks)
        if self.rows:
            self.conn.execute(sa.insert(events), self.rows)
        self.clicks, self.rows = [], []
