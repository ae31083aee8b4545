"""Destination type "fake": a platform-shaped receiver for tests, benchmarks and dry runs.

It batches like a real platform (up to `batch_size`, at most 1000 events per request):

    POST {api_base}/events?key=<api_key>          (the key is a secret: redacted in the log)
    Authorization: Bearer <token>                 (only with `token_url`: the OAuth-like flow)
    {"events": [{"id", "event_id", "name", "occurred_at", ...base.event_json}, ...]}

A 2xx answer delivers every event except those it names, by `event_id`:
`{"rejected": {"<event_id>": "reason"}, "retry": {"<event_id>": "reason"}}`. 408, 429 and 5xx
retry the whole batch (honouring `Retry-After`); any other status rejects it.
With `token_url`, the worker first POSTs `{"client_secret": api_key}` there and expects
`{"access_token": ..., "expires_in": seconds}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import SecretStr

from firstparty.destinations.base import (
    Adapter,
    Delivered,
    DestinationSettings,
    Outcome,
    OutgoingRequest,
    Rejected,
    Response,
    Retry,
    event_json,
    status_outcome,
)
from firstparty.event import Event
from firstparty.identity import match_keys as match_keys_mod


class FakeSettings(DestinationSettings):
    type: Literal["fake"] = "fake"
    api_base: str = "http://127.0.0.1:9"
    api_key: SecretStr | None = None
    token_url: str | None = None
    max_event_age_days: float | None = None  # plays a platform's age window
    # Plays a platform's test mode: sent in the body, the answer counts as a test send.
    test_event_code: str | None = None
    # Plays an adapter bug (a key that cannot sign, a crash) in one step: fault drills.
    raise_in: Literal["token_request", "build", "interpret"] | None = None


class FakeAdapter(Adapter):
    type = "fake"
    settings_model = FakeSettings
    for_tests = True
    max_batch = 1000
    match_keys = match_keys_mod.KEYS  # plays any platform
    settings: FakeSettings

    @property
    def test_mode(self) -> str | None:
        code = self.settings.test_event_code
        return f"test_event_code={code}" if code else None

    @property
    def age_limit(self) -> timedelta | None:
        days = self.settings.max_event_age_days
        return None if days is None else timedelta(days=days)

    def skip(self, event: Event, now: datetime) -> str | None:
        days = self.settings.max_event_age_days
        if days is not None and now - event.occurred_at > timedelta(days=days):
            return f"event is older than {days:g} days; fake accepts up to {days:g} days"
        return None

    def _drill(self, step: str) -> None:
        if self.settings.raise_in == step:
            raise RuntimeError(f"fake adapter drill: {step} raised")

    def _key(self) -> str | None:
        return self.settings.api_key.get_secret_value() if self.settings.api_key else None

    @property
    def needs_token(self) -> bool:
        return bool(self.settings.token_url)

    def token_request(self) -> OutgoingRequest | None:
        self._drill("token_request")
        if not self.settings.token_url:
            return None
        key = self._key() or ""
        return OutgoingRequest(
            "POST", self.settings.token_url, (), json={"client_secret": key}, secrets=(key,)
        )

    def read_token(self, response: Response) -> tuple[str, float]:
        answer = response.json()
        return str(answer["access_token"]), float(answer.get("expires_in", 3600))

    def build(self, events: Sequence[Event], token: str | None = None) -> list[OutgoingRequest]:
        self._drill("build")
        key = self._key()
        url = self.settings.api_base.rstrip("/") + "/events" + (f"?key={key}" if key else "")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body: dict[str, Any] = {
            "events": [event_json(e, self.settings.mapped_name(e.name)) for e in events]
        }
        if self.settings.test_event_code:
            body["test_event_code"] = self.settings.test_event_code
        secrets = tuple(s for s in (key, token) if s)
        pks = tuple(e.pk for e in events)
        return [OutgoingRequest("POST", url, pks, headers=headers, json=body, secrets=secrets)]

    def interpret(self, request: OutgoingRequest, response: Response) -> dict[str, Outcome]:
        self._drill("interpret")
        outcome = status_outcome(response)
        if not isinstance(outcome, Delivered):
            return {pk: outcome for pk in request.event_pks}
        try:
            answer = response.json() or {}
        except ValueError:  # a proxy's HTML page on a 200: no per-event verdicts in it
            answer = {}
        answer = answer if isinstance(answer, dict) else {}
        rejected, retry = answer.get("rejected") or {}, answer.get("retry") or {}
        outcomes: dict[str, Outcome] = {}
        for item in request.json["events"]:
            event_id, pk = item["event_id"], item["id"]
            if event_id in rejected:
                outcomes[pk] = Rejected(str(rejected[event_id]))
            elif event_id in retry:
                outcomes[pk] = Retry(str(retry[event_id]))
            else:
                outcomes[pk] = Delivered(test=bool(self.settings.test_event_code))
        return outcomes
