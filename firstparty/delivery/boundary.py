"""One boundary around every adapter call: whatever an adapter raises becomes an outcome.

Adapters signal on purpose with `RetryableError` (try later) or `PermanentError` (refused); any
other exception is a bug or a broken setting (a service-account key that cannot sign): it is
logged once with its traceback, counted in `firstparty_adapter_errors_total` and becomes an
`AdapterError`, which fails the work it concerns with the reason. Nothing an adapter raises
leaves the delivery of its own batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, Protocol

from firstparty import metrics
from firstparty.destinations.base import DestinationSettings, Outcome, Rejected, Retry
from firstparty.errors import AdapterError, DeliveryError, RetryableError

log = logging.getLogger(__name__)

Step = Literal[
    "skip",
    "token_request",
    "read_token",
    "build",
    "interpret",
    "follow_up",
    "interpret_follow_up",
    "export",
    "quality_requests",
    "read_quality",
]


class Configured(Protocol):
    """What the boundary needs of an adapter (a destination's or an audience's): its settings."""

    settings: DestinationSettings


@contextmanager
def adapter_call(adapter: Configured, step: Step) -> Iterator[None]:
    """Map every exception of one adapter step into the `DeliveryError` tree."""
    try:
        yield
    except DeliveryError:
        raise
    except Exception as exc:
        name = adapter.settings.name
        log.exception("destination %s: adapter error in %s", name, step)
        metrics.ADAPTER_ERRORS.labels(destination=name, step=step).inc()
        raise AdapterError(f"adapter error in {step}: {type(exc).__name__}: {exc}") from exc


def outcome(error: DeliveryError) -> Outcome:
    """The outcome a classified failure gives the work it concerns."""
    if isinstance(error, RetryableError):
        return Retry(str(error), error.after)
    return Rejected(str(error))
