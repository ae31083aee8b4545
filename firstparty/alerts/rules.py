"""The alert rules' names, the states an alert takes, and what evaluation finds."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class AlertState(StrEnum):
    """An alert's state: a rule's condition holds for its subject, or no longer does."""

    FIRING = "firing"
    RESOLVED = "resolved"


class Rule(StrEnum):
    """The built-in rules, each a section of `[alerts]`."""

    DELIVERY_SUCCESS = "delivery_success"
    QUEUE_LAG = "queue_lag"
    SOURCE_SILENT = "source_silent"
    SERVER_ERRORS = "server_errors"
    DESTINATION_SETUP = "destination_setup"


class Channel(StrEnum):
    """Where messages go."""

    WEBHOOK = "webhook"
    EMAIL = "email"


class NoticeOutcome(StrEnum):
    """What became of one message to one channel (alert_history)."""

    SENT = "sent"
    FAILED = "failed"  # not accepted; tried again at the next round


Key = tuple[str, str]  # (rule, subject)


@dataclass(frozen=True)
class Finding:
    """A rule whose condition holds for one subject (a destination, a source, the outbox)."""

    rule: Rule
    subject: str
    detail: str

    @property
    def key(self) -> Key:
        return (self.rule.value, self.subject)


@dataclass(frozen=True)
class Verdicts:
    """What one evaluation found: the firing alerts, and the subjects it could not judge (too
    few figures), which keep the state they had."""

    firing: list[Finding] = field(default_factory=list)
    undecided: set[Key] = field(default_factory=set)
