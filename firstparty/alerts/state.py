"""Alert state in the database: what fires since when, what each channel was last told, the
evaluation lease, and the answers 500 each process counted.

Every change that must happen once is a conditional write whose row count says who won: the
lease (`take_lease`), a notice (`claim`). So a restart or a second process never sends twice.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from firstparty.alerts.rules import AlertState, Channel, Key, NoticeOutcome, Verdicts
from firstparty.store.models import (
    alert_history,
    alert_lease,
    alert_notices,
    alerts,
    server_errors,
)

LEASE = "evaluator"
ERRORS_KEPT = timedelta(days=1)  # longer than any window


@dataclass(frozen=True)
class Alert:
    """One rule's state for one subject."""

    rule: str
    subject: str
    state: AlertState
    since: datetime
    detail: str


@dataclass(frozen=True)
class Notice:
    """A message owed to one channel: `alert` now, `told` what the channel last had (None:
    nothing yet) and when."""

    alert: Alert
    channel: Channel
    told: AlertState | None
    told_at: datetime | None


def take_lease(engine: Engine, *, holder: str, now: datetime, seconds: float) -> bool:
    """Hold the evaluation lease until now + seconds, if it is free, lapsed or already ours."""
    c = alert_lease.c
    with engine.begin() as conn:
        done = conn.execute(
            alert_lease.update()
            .where(c.name == LEASE, sa.or_(c.expires_at <= now, c.holder == holder))
            .values(holder=holder, expires_at=now + timedelta(seconds=seconds))
        )
    return done.rowcount == 1


def apply(engine: Engine, verdicts: Verdicts, *, now: datetime) -> list[Alert]:
    """Record what this evaluation found: new firing alerts, resolved ones; returns them all."""
    firing = {f.key: f for f in verdicts.firing}
    with engine.begin() as conn:
        known = {(a.rule, a.subject): a for a in _alerts(conn)}
        for key, finding in firing.items():
            _fire(conn, known.get(key), key, finding.detail, now)
        for key, alert in known.items():
            lapsed = key not in firing and key not in verdicts.undecided
            if alert.state == AlertState.FIRING and lapsed:
                _set(conn, key, state=AlertState.RESOLVED, since=now, updated_at=now)
        return _alerts(conn)


def _fire(conn: Connection, alert: Alert | None, key: Key, detail: str, now: datetime) -> None:
    if alert is None:
        row = {"rule": key[0], "subject": key[1], "detail": detail, "updated_at": now}
        conn.execute(alerts.insert().values(**row, state=AlertState.FIRING.value, since=now))
    elif alert.state == AlertState.RESOLVED:
        _set(conn, key, state=AlertState.FIRING, since=now, detail=detail, updated_at=now)
    else:
        _set(conn, key, detail=detail, updated_at=now)


def _set(conn: Connection, key: Key, **values: object) -> None:
    c = alerts.c
    conn.execute(alerts.update().where(c.rule == key[0], c.subject == key[1]).values(**values))


def _alerts(conn: Connection) -> list[Alert]:
    rows = conn.execute(sa.select(alerts).order_by(alerts.c.rule, alerts.c.subject)).all()
    return [Alert(r.rule, r.subject, AlertState(r.state), r.since, r.detail) for r in rows]


def listing(engine: Engine) -> list[Alert]:
    """Every alert known, firing or resolved."""
    with engine.connect() as conn:
        return _alerts(conn)


def owed(
    engine: Engine,
    current: Iterable[Alert],
    *,
    channels: Collection[Channel],
    now: datetime,
    min_interval: timedelta,
) -> list[Notice]:
    """The messages due now: a state a channel was not told yet, the last message to that
    channel at least `min_interval` ago. A resolve nobody heard fire is owed to nobody."""
    with engine.connect() as conn:
        told = {
            (r.rule, r.subject, r.channel): (AlertState(r.state), r.sent_at)
            for r in conn.execute(sa.select(alert_notices))
        }
    due = []
    for alert in current:
        for channel in channels:
            state, at = told.get((alert.rule, alert.subject, channel.value), (None, None))
            if alert.state == state or (state is None and alert.state == AlertState.RESOLVED):
                continue
            if at is None or now - at >= min_interval:
                due.append(Notice(alert, channel, state, at))
    return due


def claim(engine: Engine, notice: Notice, *, now: datetime) -> bool:
    """Mark `notice` as sent, if no other process did first; whether this one won."""
    alert, c = notice.alert, alert_notices.c
    values = {"state": alert.state.value, "sent_at": now}
    with engine.begin() as conn:
        if notice.told is None:
            try:
                with conn.begin_nested():
                    conn.execute(
                        alert_notices.insert().values(
                            rule=alert.rule,
                            subject=alert.subject,
                            channel=notice.channel.value,
                            **values,
                        )
                    )
            except IntegrityError:
                return False
            return True
        done = conn.execute(
            alert_notices.update()
            .where(*_notice_is(notice), c.state == notice.told.value)
            .values(**values)
        )
        return done.rowcount == 1


def unclaim(engine: Engine, notice: Notice) -> None:
    """The message could not be sent: put the channel back as it was, for the next round."""
    with engine.begin() as conn:
        if notice.told is None or notice.told_at is None:
            conn.execute(alert_notices.delete().where(*_notice_is(notice)))
        else:
            conn.execute(
                alert_notices.update()
                .where(*_notice_is(notice))
                .values(state=notice.told.value, sent_at=notice.told_at)
            )


def _notice_is(notice: Notice) -> list[sa.ColumnElement[bool]]:
    c = alert_notices.c
    return [
        c.rule == notice.alert.rule,
        c.subject == notice.alert.subject,
        c.channel == notice.channel.value,
    ]


@dataclass(frozen=True)
class Sent:
    """One message tried (alert_history), newest first on the Alerts page."""

    id: int
    at: datetime
    rule: str
    subject: str
    state: AlertState
    channel: Channel
    outcome: NoticeOutcome
    detail: str
    error: str | None


def record_notice(engine: Engine, notice: Notice, *, at: datetime, error: str | None) -> None:
    """Keep what one message said and whether the channel took it (`error`: why not)."""
    alert = notice.alert
    outcome = NoticeOutcome.SENT if error is None else NoticeOutcome.FAILED
    with engine.begin() as conn:
        conn.execute(
            alert_history.insert().values(
                at=at,
                rule=alert.rule,
                subject=alert.subject,
                state=alert.state.value,
                channel=notice.channel.value,
                outcome=outcome.value,
                detail=alert.detail,
                error=error,
            )
        )


def history(engine: Engine, *, before: int | None, limit: int) -> list[Sent]:
    """Messages tried, newest first; `before`: the last id of the previous page."""
    c = alert_history.c
    query = sa.select(alert_history).order_by(c.id.desc()).limit(limit)
    if before is not None:
        query = query.where(c.id < before)
    with engine.connect() as conn:
        return [
            Sent(
                id=r.id,
                at=r.at,
                rule=r.rule,
                subject=r.subject,
                state=AlertState(r.state),
                channel=Channel(r.channel),
                outcome=NoticeOutcome(r.outcome),
                detail=r.detail,
                error=r.error,
            )
            for r in conn.execute(query)
        ]


def record_errors(engine: Engine, *, count: int, now: datetime) -> None:
    """Add this process's answers 500 since its last round (nothing when none)."""
    if count > 0:
        with engine.begin() as conn:
            conn.execute(server_errors.insert().values(at=now, count=count))
            conn.execute(server_errors.delete().where(server_errors.c.at < now - ERRORS_KEPT))
