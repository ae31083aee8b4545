"""The exception tree.

FirstpartyError
├── ConfigError            settings or config file invalid: start-up stops, naming the key
├── InputError             a request the caller must fix (4xx); carries status and field details
├── UnexpectedError        ingest met something no one anticipated: logged, counted, answered 500
└── DeliveryError          raised while sending to a destination
    ├── RetryableError     transport failure, timeout, 5xx, 429: try again later
    └── PermanentError     the platform refused the work: mark failed, keep for replay
        └── AdapterError   an adapter raised anything else: failed with the reason, logged
"""

from __future__ import annotations

from dataclasses import dataclass, field


class FirstpartyError(Exception):
    """Base of every error firstparty raises on purpose."""


class ConfigError(FirstpartyError):
    """The settings are invalid; the message names the offending key."""


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


@dataclass
class InputError(FirstpartyError):
    """Bad input: answered with `status` and never stored."""

    status: int
    error: str
    details: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.error}"


class UnexpectedError(FirstpartyError):
    """An unanticipated failure, already logged with its traceback and counted: a bare 500."""

    status = 500
    error = "internal error"

    def __init__(self, error_id: str = "") -> None:
        super().__init__(error_id)
        self.error_id = error_id  # the id of its log line (firstparty.crashes), for the caller


class DeliveryError(FirstpartyError):
    """Sending to a destination failed."""


class RetryableError(DeliveryError):
    """Worth trying again later (network, timeout, 5xx, 429)."""

    def __init__(self, reason: str, after: float | None = None) -> None:
        super().__init__(reason)
        self.after = after


class PermanentError(DeliveryError):
    """The destination refused the work; retrying the same request will not help."""


class AdapterError(PermanentError):
    """An adapter raised something unexpected (a bug, a key that cannot sign): fail, log, count."""
