"""One evaluation round (`Evaluator.round`) and the loop that runs it every `interval_seconds`
in each server and worker process; the database lease lets one of them evaluate at a time."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
from sqlalchemy.engine import Engine

from firstparty import metrics
from firstparty.alerts import evaluate, figures, notify, state
from firstparty.alerts.rules import Channel
from firstparty.destinations.base import DestinationSettings
from firstparty.destinations.book import DestinationBook
from firstparty.settings import Settings
from firstparty.store import db

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Round:
    """What one round did: whether this process held the lease, messages sent and failed."""

    evaluated: bool
    sent: int = 0
    failed: int = 0


class Evaluator:
    """Judges the rules over the database and sends what is owed; `clock` is injectable."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        book: DestinationBook | None = None,
        clock: Clock = utcnow,
        client: aiohttp.ClientSession | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.book = book
        self.clock = clock
        self.holder = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"
        self._client = client
        self._own_client = client is None
        self._errors_seen = internal_errors()

    @property
    def channels(self) -> list[Channel]:
        rules = self.settings.alerts
        return [
            channel
            for channel, on in ((Channel.WEBHOOK, rules.webhook), (Channel.EMAIL, rules.email))
            if on is not None
        ]

    async def round(self) -> Round:
        """Count this process's answers 500, then, holding the lease, evaluate and notify."""
        now = self.clock()
        await self._record_errors(now)
        rules = self.settings.alerts
        taken = await asyncio.to_thread(
            state.take_lease,
            self.engine,
            holder=self.holder,
            now=now,
            seconds=rules.lease_seconds,
        )
        if not taken:
            return Round(evaluated=False)
        seen = await self.observe(now)
        verdicts = evaluate.evaluate(seen, rules)
        current = await asyncio.to_thread(state.apply, self.engine, verdicts, now=now)
        owed = await asyncio.to_thread(
            state.owed,
            self.engine,
            current,
            channels=self.channels,
            now=now,
            min_interval=timedelta(minutes=rules.min_interval_minutes),
        )
        sent = failed = 0
        for notice in owed:
            if not await asyncio.to_thread(state.claim, self.engine, notice, now=now):
                continue
            error = await self._send(notice)
            if error is None:
                sent += 1
            else:
                failed += 1
                await asyncio.to_thread(state.unclaim, self.engine, notice)
            await asyncio.to_thread(state.record_notice, self.engine, notice, at=now, error=error)
        return Round(evaluated=True, sent=sent, failed=failed)

    async def observe(self, now: datetime) -> evaluate.Figures:
        """Every figure the rules judge, read without a write lock (`db.reading`: on SQLite a
        round's counts no longer hold ingest's commits back while they run)."""
        rules = self.settings.alerts
        with db.reading():
            setup = (
                await asyncio.to_thread(self.setup, now) if rules.destination_setup.enabled else {}
            )
            return await asyncio.to_thread(
                figures.read,
                self.engine,
                now=now,
                rules=rules,
                config_sources=[s.name for s in self.settings.sources],
                setup=setup,
                destinations=self.destinations(),
            )

    def destinations(self) -> list[str]:
        """The destinations in force now (the book's, else the config file's)."""
        if self.book is None:
            return [d.name for d in self.settings.destinations]
        return list(self.book.adapters)

    def setup(self, now: datetime) -> Mapping[str, str]:
        """What is wrong with each destination: unable to send (a secret not set), in test
        mode, a credential expiring soon, or refused by the platform in its newest answer."""
        found: dict[str, list[str]] = {}
        if self.book is None:
            for name, unset in self.settings.misconfigured.items():
                found[name] = ["environment variable(s) not set: " + ", ".join(unset)]
            for d in self.settings.destinations:
                if isinstance(d, DestinationSettings):
                    self._expiry(found, d, now)
            return {name: "; ".join(problems) for name, problems in found.items()}
        adapters = self.book.adapters
        for name, problem in self.book.problems.items():
            found.setdefault(name, []).append(problem)
        for name, adapter in adapters.items():
            if adapter.test_mode is not None:
                found.setdefault(name, []).append(f"in test mode ({adapter.test_mode})")
            self._expiry(found, adapter.settings, now)
        window = self.settings.alerts.destination_setup.refused_window_minutes
        answers = figures.newest_answers(
            self.engine, now=now, minutes=window, destinations=adapters
        )
        for name, (status, body) in sorted(answers.items()):
            sender = adapters.get(name)
            refused = sender.credential_refused(status, body) if sender is not None else None
            if refused is not None:
                found.setdefault(name, []).append(refused)
        return {name: "; ".join(problems) for name, problems in found.items()}

    def _expiry(
        self, found: dict[str, list[str]], destination: DestinationSettings, now: datetime
    ) -> None:
        """Note a credential past or within `credential_warning_days` of its declared end."""
        ends = destination.credential_expires_at
        if ends is None:
            return
        days = self.settings.alerts.destination_setup.credential_warning_days
        when = f"{ends:%Y-%m-%d %H:%M} UTC"
        if ends <= now:
            found.setdefault(destination.name, []).append(f"credential expired at {when}")
        elif ends - now <= timedelta(days=days):
            left = (ends - now).total_seconds() / 86400
            found.setdefault(destination.name, []).append(
                f"credential expires at {when} (in {left:.1f} days; warning from {days} days)"
            )

    async def _send(self, notice: state.Notice) -> str | None:
        """Send one message; None when the channel took it, else why not."""
        rules, instance = self.settings.alerts, self.settings.public_url
        try:
            if notice.channel == Channel.WEBHOOK and rules.webhook is not None:
                await notify.send_webhook(
                    rules.webhook, notice.alert, instance=instance, client=self._session()
                )
            elif notice.channel == Channel.EMAIL and rules.email is not None:
                await notify.send_email(rules.email, notice.alert, instance=instance)
        except notify.NotifyFailed as exc:
            log.warning(
                "alert %s %s not sent by %s (%s); retrying at the next round",
                notice.alert.rule,
                notice.alert.subject,
                notice.channel.value,
                exc,
            )
            return str(exc)
        return None

    async def _record_errors(self, now: datetime) -> None:
        seen = internal_errors()
        await asyncio.to_thread(
            state.record_errors, self.engine, count=seen - self._errors_seen, now=now
        )
        self._errors_seen = seen

    async def run(self) -> None:
        """Every `interval_seconds`, a round; a failing round is logged and tried again."""
        while True:
            await asyncio.sleep(self.settings.alerts.interval_seconds)
            try:
                await self.round()
            except Exception:  # a busy or unreachable database: the next round tries again
                log.warning("alerts evaluation failed; retrying at the next round", exc_info=True)

    def _session(self) -> aiohttp.ClientSession:
        """The HTTP session, opened on the first message (inside the running loop)."""
        if self._client is None:
            self._client = aiohttp.ClientSession()
        return self._client

    async def close(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.close()
            self._client = None


def internal_errors() -> int:
    """Answers 500 this process has counted (`firstparty_internal_errors_total`, all labels)."""
    return int(
        sum(
            sample.value
            for family in metrics.INTERNAL_ERRORS.collect()
            for sample in family.samples
            if sample.name.endswith("_total")
        )
    )
