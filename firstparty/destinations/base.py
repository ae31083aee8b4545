"""The destination interface: the one extension point for ad platforms and other receivers.

An adapter is pure. Given a batch of events and its typed settings it *builds* the outgoing
HTTP request(s); given the response to one of them it *interprets* it into an outcome per event.
It never does I/O: the worker owns the HTTP client, timeouts, retries, batching and the
outgoing-request log (the way httpx keeps I/O out of `Auth.auth_flow`).

    worker                              adapter (pure)
    ------                              --------------
    claim work, load events  ────────▶  skip(event)            -> reason | None   (age, consent...)
                                        build(events, token)   -> [OutgoingRequest]
    send each request        ────────▶  interpret(req, resp)   -> {event pk: Outcome}
    record track, finish work
    later, if it asked: poll    ────────▶  follow_up(request_id, events, token) -> OutgoingRequest
                                        interpret_follow_up(req, resp, events) -> {pk: Outcome}

Adapters that need an access token first (OAuth2) return a request from `token_request()`;
the worker sends it, hands the answer to `read_token()`, caches the token until it expires
and passes it to `build()`.

List a new adapter in `registry.BUILTINS`; core code never names a platform.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from firstparty import platforms
from firstparty.event import Event

__all__ = [
    "Adapter",
    "Delivered",
    "DestinationSettings",
    "Outcome",
    "OutgoingRequest",
    "Rejected",
    "Response",
    "Retry",
    "Skipped",
    "Verdict",
    "batch_refused",
    "event_json",
    "retry_after",
    "status_outcome",
]

# ---------------------------------------------------------------- what an adapter returns


@dataclass(frozen=True)
class OutgoingRequest:
    """One HTTP request to send; `json` is encoded by the worker, `body` is sent as is."""

    method: Literal["GET", "POST", "PUT", "DELETE"]  # DELETE: Meta's audience removals
    url: str
    event_pks: tuple[str, ...]  # the events this request carries, in order
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    body: bytes | None = None
    # Strings (tokens, secrets) to mask wherever this request is recorded.
    secrets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body) if self.body else None


@dataclass(frozen=True)
class Delivered:
    detail: str = ""
    # Accepted in the platform's test mode (test_event_code, validateOnly, GA4's debug
    # endpoint): recorded as `test`, not `delivered`, since no conversion was counted.
    test: bool = False
    # The platform accepted the request but decides later (Google Data Manager's requestId):
    # the delivery stays `confirming` and the worker asks with `Adapter.follow_up` until the
    # platform's final word, or until the adapter's `follow_up_deadline` passes.
    follow_up: str | None = None


@dataclass(frozen=True)
class Retry:
    reason: str
    after: float | None = None  # seconds, e.g. from Retry-After
    # Send this event again in a request of its own: the platform refused a whole batch without
    # naming the event at fault, so resending each alone finds it (see `batch_refused`).
    alone: bool = False
    # The platform's own error code (`Graph 100/2804019`), for the delivery health report;
    # None: the report shows the HTTP status of the answer instead. Not compared: a label.
    code: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Rejected:
    reason: str  # the platform's own message, kept for the operator and replay
    code: str | None = field(default=None, compare=False)  # as on `Retry`


@dataclass(frozen=True)
class Skipped:
    reason: str  # never sent: too old for the platform, no usable identifier, ...


Outcome = Delivered | Retry | Rejected | Skipped


@dataclass(frozen=True)
class Verdict:
    """The platform's own judgement of how well it matched one event name (its score or range,
    as the platform states it, e.g. Meta's Event Match Quality "6.8" or Google's "41_TO_50")."""

    event_name: str  # the platform's event name; "" when the verdict is for every event
    metric: str  # event_match_quality | match_rate_range
    value: str
    detail: str = ""  # e.g. Meta's match key feedback, short


# ---------------------------------------------------------------- settings and the adapter


class DestinationSettings(BaseModel):
    """Keys every destination has; adapters subclass it (secrets as SecretStr)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    type: str
    api_base: str | None = None
    # incoming event name ("page" for page events) -> the platform's name; others are not sent.
    # None: the type's default (`platforms.DEFAULT_EVENTS`), or every event (webhook, fake).
    events: dict[str, str] | None = None
    dry_run: bool = False
    timeout_seconds: float = Field(default=10.0, gt=0)
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    retry_window_seconds: int | None = Field(default=None, ge=60)
    batch_size: int | None = Field(default=None, ge=1)
    # Events flagged as from a crawler or headless browser (events.bot) are sent only when true.
    # Ad platforms: off, so robots are never counted as conversions; webhook: on (its default).
    forward_bots: bool = False
    # The names this destination sends (after `events`) that are conversions, for the reports;
    # None: the platform's default (`platforms.default_conversions`). Not sent anywhere.
    conversions: list[str] | None = None
    # When the platform credential (token, refresh token, key) stops working, if known: the
    # destination_setup alert fires `alerts.destination_setup.credential_warning_days` before.
    credential_expires_at: datetime | None = None

    @field_validator("credential_expires_at", mode="before")
    @classmethod
    def _a_moment(cls, value: Any) -> Any:
        """A day (TOML `2027-01-31`) is its midnight UTC; a time without a zone is UTC."""
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        return value

    @field_validator("credential_expires_at")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    def is_conversion(self, event_name: str) -> bool:
        """Whether this destination sends the event as one of its conversions."""
        mapped = self.mapped_name(event_name)
        if mapped is None:
            return False
        names = platforms.default_conversions(self.type)
        if self.conversions is not None:
            names = frozenset(self.conversions)
        return names is None or mapped in names

    def mapped_name(self, event_name: str) -> str | None:
        """The platform's name for this event, or None when the destination does not want it."""
        default = platforms.default_events(self.type)
        if default is None:  # a forwarder: every event, or those its mapping names
            return event_name if self.events is None else self.events.get(event_name)
        if event_name in platforms.NEVER_SENT:
            return None
        return (self.events if self.events is not None else default).get(event_name)


class Adapter:
    """Base of every destination adapter. Subclasses set the class attributes and override."""

    type: ClassVar[str]
    settings_model: ClassVar[builtins.type[DestinationSettings]] = DestinationSettings
    max_batch: ClassVar[int] = 1
    # Events older than this are skipped with a reason instead of sent (None: no limit).
    max_event_age: ClassVar[timedelta | None] = None
    # A minimal valid `[[destinations]]` entry for this type: documentation, and the settings the
    # contract test (tests/destinations/test_contract.py) runs the adapter with. It must map the
    # track event "Lead" and accept a fresh browser Lead carrying the usual identifiers.
    example_settings: ClassVar[Mapping[str, Any]] = {}
    # A type for tests and demos (the built-in `fake`): listed last where people pick a type.
    for_tests: ClassVar[bool] = False
    # The identifiers the platform matches events to people with (`match_keys.KEYS`): the
    # columns of the match quality report for destinations of this type.
    match_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: DestinationSettings) -> None:
        self.settings = settings

    @property
    def batch_size(self) -> int:
        return min(self.settings.batch_size or self.max_batch, self.max_batch)

    def wants(self, event_type: str, event_name: str, *, bot: bool = False) -> bool:
        """Whether this destination takes the event at all (decided at ingest, for the outbox).

        `bot`: the event is flagged as automated; taken only with `forward_bots`.
        """
        if bot and not self.settings.forward_bots:
            return False
        return self.settings.mapped_name(event_name) is not None

    def skip(self, event: Event, now: datetime) -> str | None:
        """A reason not to send this event now, or None. Default: the platform's age window."""
        limit = self.age_limit
        if limit is not None and now - event.occurred_at > limit:
            return (
                f"event is {_age(now - event.occurred_at)} old; {self.type} accepts events "
                f"up to {_age(limit)} old"
            )
        return None

    def accepted_until(self, event: Event) -> datetime | None:
        """The last moment the platform still takes this event (its age window from the event
        time), so the last moment a replay can send it; None: no limit. Agrees with `skip`."""
        limit = self.age_limit
        return None if limit is None else event.occurred_at + limit

    @property
    def age_limit(self) -> timedelta | None:
        """How old an event the platform takes, with this destination's settings."""
        return self.max_event_age

    # ------------------------------------------------- the platform's verdict (match quality)

    def quality_requests(
        self, token: str | None, request_ids: Sequence[str]
    ) -> list[OutgoingRequest]:
        """Requests asking the platform how well it matched our events (Meta's dataset quality,
        Google's match-rate range of recent requests `request_ids`); none by default."""
        return []

    def read_quality(self, request: OutgoingRequest, response: Response) -> list[Verdict]:
        """The platform's verdicts in the answer to one of `quality_requests`."""
        return []

    @property
    def test_mode(self) -> str | None:
        """How this destination is in its platform's test mode (`test_event_code=…`), or None."""
        return None

    def credential_refused(self, status: int, body: str) -> str | None:
        """Why this logged answer says the platform refused the credential itself (expired,
        revoked), or None. Read by the destination_setup alert from the request log."""
        return None

    @property
    def needs_token(self) -> bool:
        """Whether `build` needs an access token from `token_request()` first (OAuth2)."""
        return False

    def token_request(self) -> OutgoingRequest | None:
        """A request that obtains an access token, for adapters whose `needs_token` is true."""
        return None

    def read_token(self, response: Response) -> tuple[str, float]:
        """The token and its lifetime in seconds, from the answer to `token_request()`."""
        raise NotImplementedError

    def build(self, events: Sequence[Event], token: str | None = None) -> list[OutgoingRequest]:
        """The request(s) carrying these events (at most `batch_size` of them)."""
        raise NotImplementedError

    def interpret(self, request: OutgoingRequest, response: Response) -> dict[str, Outcome]:
        """An outcome for every event pk in `request.event_pks`."""
        raise NotImplementedError

    # ------------------------------------------------------- follow-up (asynchronous platforms)

    @property
    def follow_up_delay(self) -> float:
        """Seconds from acceptance (`Delivered(follow_up=...)`) to the first follow-up."""
        return 0.0

    @property
    def follow_up_deadline(self) -> float:
        """Seconds from acceptance after which the worker stops asking and fails the work."""
        return 0.0

    def follow_up(
        self, request_id: str, events: Sequence[Event], token: str | None
    ) -> OutgoingRequest:
        """The request asking the platform what became of an accepted request (its events)."""
        raise NotImplementedError

    def interpret_follow_up(
        self, request: OutgoingRequest, response: Response, events: Sequence[Event]
    ) -> dict[str, Outcome]:
        """Per event asked about: Delivered or Rejected once the platform is done, else Retry."""
        raise NotImplementedError


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"


def retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header, delta-seconds or HTTP-date (RFC 9110 §10.2.3)."""
    for key, value in headers.items():
        if key.lower() == "retry-after":
            return _retry_after_value(value.strip(), now or datetime.now(UTC))
    return None


def _retry_after_value(value: str, now: datetime) -> float | None:
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def status_outcome(response: Response) -> Outcome:
    """The usual reading of a status: 2xx delivered, 408/429/5xx retry, other 4xx rejected."""
    if 200 <= response.status < 300:
        return Delivered()
    text = response.body[:500].decode("utf-8", "replace")
    if response.status in (408, 429) or response.status >= 500:
        return Retry(f"HTTP {response.status}: {text}", retry_after(response.headers))
    return Rejected(f"HTTP {response.status}: {text}")


def event_json(event: Event, name: str | None = None) -> dict[str, Any]:
    """The event as plain JSON (hashed identifiers only), for receivers that take it whole."""
    return {
        "id": event.pk,
        "event_id": event.event_id,
        "type": event.type,
        "name": name or event.name,
        "source": event.source,
        "occurred_at": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "received_at": event.received_at.isoformat().replace("+00:00", "Z"),
        "url": event.url,
        "referrer": event.referrer,
        "title": event.title,
        "properties": dict(event.properties),
        "user": dict(event.user),
        "context": dict(event.context),
        "consent": dict(event.consent),
        "visitor_id": event.visitor_id,
        "user_id": event.user_id,
        "bot": event.bot,
        "click_ids": [
            {
                "kind": c.kind,
                "value": c.value,
                "first_seen_at": c.first_seen_at.isoformat().replace("+00:00", "Z"),
            }
            for c in event.click_ids
        ],
    }


def batch_refused(
    event_pks: Sequence[str], reason: str, culprit: int | None, code: str | None = None
) -> dict[str, Outcome]:
    """Outcomes when a platform refused a whole batch because of one event.

    The event at index `culprit` is rejected and the others are sent again at once without it.
    When the platform did not say which event was at fault, a lone event is rejected and the
    events of a larger batch are each sent again alone, which finds the culprit.
    """
    if culprit is not None and 0 <= culprit < len(event_pks):
        bad = event_pks[culprit]
        again = Retry(f"batch refused because of event {bad}; sent again without it", after=0)
        return {pk: Rejected(reason, code) if pk == bad else again for pk in event_pks}
    if len(event_pks) == 1:
        return {event_pks[0]: Rejected(reason, code)}
    alone = Retry(f"batch refused, event at fault not named ({reason}); sent again alone", 0, True)
    return dict.fromkeys(event_pks, alone)
