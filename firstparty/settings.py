"""One Settings object, built from the environment and the TOML config file, validated at start-up.

Nothing here runs at import time: `load()` is called by the CLI (or a test) and the result is
passed down. A secret is never written in the config file: `"env:NAME"` reads variable NAME.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import phonenumbers
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from firstparty.audiences.definition import AudienceSettings
from firstparty.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///./firstparty.db"
UNSAFE_SECRETS = {"changeme", "change-me", "changethis", "secret", "password", "test"}
MIN_ADMIN_TOKEN = 16
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?$")


class Strict(BaseModel):
    """Base for every config section: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CookieSettings(Strict):
    domain: str | None = None
    name: str = Field(default="fp_id", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    max_age_days: int = Field(default=400, ge=1, le=400)
    secure: bool = True
    keeper: bool = False  # re-set the platform cookies that ITP shortens (issue 6)


class SourceSettings(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    kind: Literal["browser", "server"]
    write_key: SecretStr
    origins: list[str] = []
    # This key's ceiling; None takes [collect]'s (as do sources created with the CLI).
    rate_limit_per_second: float | None = Field(default=None, gt=0)
    rate_limit_burst: int | None = Field(default=None, ge=1)
    # Events from known crawlers and headless browsers (collect/bots.py): kept and flagged, or
    # dropped (answered 202 with "dropped": "bot", nothing stored). None takes [collect]'s.
    bots: Literal["flag", "drop"] | None = None

    @field_validator("write_key")
    @classmethod
    def _key_long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 8:
            raise ValueError("write_key must be at least 8 characters")
        return value

    @field_validator("origins")
    @classmethod
    def _origins_are_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not origin.startswith(("http://", "https://")) or origin.rstrip("/").count("/") > 2:
                raise ValueError(f"origin {origin!r} must look like https://www.example.com")
        return [o.rstrip("/") for o in value]

    @model_validator(mode="after")
    def _origins_fit_the_kind(self) -> SourceSettings:
        """A browser source without an origin would refuse every browser; a server source is
        called by no browser, so an origin there is a mistake."""
        if self.kind == "browser" and not self.origins:
            raise ValueError(
                "a browser source needs at least one origin (the site's, e.g. "
                "https://www.example.com)"
            )
        if self.kind == "server" and self.origins:
            raise ValueError("a server source takes no origins (browsers use a browser source)")
        return self


class CollectSettings(Strict):
    """Limits and the time policy of the collection endpoints."""

    max_event_bytes: int = Field(default=32 * 1024, ge=1024)
    max_batch_bytes: int = Field(default=512 * 1024, ge=1024)
    max_batch_events: int = Field(default=500, ge=1, le=5000)
    # Browser clocks are not trusted beyond this skew: the server time is used instead.
    max_clock_skew_seconds: int = Field(default=600, ge=0)
    # Server sources may backfill; older than this is refused (Google's click window is 90 days).
    max_past_days: int = Field(default=90, ge=1)
    # Group commit: concurrent requests share one transaction; the 202 follows the commit.
    commit_window_ms: float = Field(default=2.0, ge=0)
    commit_max_rows: int = Field(default=500, ge=1)
    # Behind a proxy you run (nginx, a load balancer): take the client IP from X-Forwarded-For.
    # Read from the right: the entry appended by the outermost of `trusted_hops` proxies.
    trust_forwarded_for: bool = False
    trusted_hops: int = Field(default=1, ge=1)
    # Rate limits, per server process (docs/tracker.md, "Rate limits"). Per write key: the
    # ceiling of a source that sets none. Per client address (browser sources): far above a
    # visitor's page-view burst, so one address holding the public key cannot exhaust the key.
    rate_limit_per_second: float = Field(default=500.0, gt=0)
    rate_limit_burst: int = Field(default=1000, ge=1)
    per_address_per_second: float = Field(default=20.0, gt=0)
    per_address_burst: int = Field(default=200, ge=1)
    per_address_tracked: int = Field(default=100_000, ge=1)  # addresses remembered (LRU)
    # What a source that says nothing (and every source created with the CLI) does with events
    # from crawlers and headless browsers: "flag" keeps them flagged in events.bot, "drop" does
    # not store them. Flagged events go to no destination without `forward_bots = true`.
    bots: Literal["flag", "drop"] = "flag"


class OtpSettings(Strict):
    provider: Literal["console", "twilio_verify", "twilio_sms"] = "console"
    code_length: int = Field(default=6, ge=4, le=10)
    ttl_seconds: int = Field(default=600, ge=30, le=3600)
    max_attempts: int = Field(default=5, ge=1, le=20)
    default_region: str = "US"
    account_sid: str | None = None
    auth_token: SecretStr | None = None
    service_sid: str | None = None
    from_number: str | None = None
    api_base: str | None = None
    sends_per_phone_per_hour: int = Field(default=5, ge=1)
    sends_per_ip_per_hour: int = Field(default=20, ge=1)
    phones_per_ip_per_day: int = Field(default=10, ge=1)
    verifies_per_ip_per_hour: int = Field(default=50, ge=1)
    resend_interval_seconds: int = Field(default=30, ge=0)
    # Added for issue 5 (docs/identity.md): tries per phone, a daily spend cap, pumping controls.
    verifies_per_phone_per_hour: int = Field(default=20, ge=1)
    # Issue 12 (SMS pumping): codes per browser (fp_id), and budgets of codes to all numbers
    # together (spend caps: raise them for a busy site, never off).
    sends_per_visitor_per_hour: int = Field(default=5, ge=1)
    sends_per_hour: int = Field(default=100, ge=1)
    sends_per_day: int = Field(default=1000, ge=1)
    # ISO 3166-1 alpha-2 countries served beside default_region's own; ["*"]: every country.
    allowed_countries: list[str] = []
    line_types: list[
        Literal[
            "mobile",
            "fixed_line_or_mobile",
            "fixed_line",
            "voip",
            "personal_number",
            "toll_free",
            "premium_rate",
            "shared_cost",
            "pager",
            "uan",
            "voicemail",
            "unknown",
        ]
    ] = ["mobile", "fixed_line_or_mobile", "voip", "personal_number"]

    @field_validator("default_region")
    @classmethod
    def _region_known(cls, value: str) -> str:
        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code")
        return value.upper()

    @field_validator("allowed_countries")
    @classmethod
    def _countries_upper(cls, value: list[str]) -> list[str]:
        if "*" in value:
            if value != ["*"]:
                raise ValueError('"*" (every country) stands alone: allowed_countries = ["*"]')
            return value
        for code in value:
            if code.upper() not in phonenumbers.SUPPORTED_REGIONS:
                raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code")
        return [c.upper() for c in value]

    @property
    def countries(self) -> frozenset[str] | None:
        """The countries codes may be sent to: None for every country."""
        if self.allowed_countries == ["*"]:
            return None
        return frozenset([self.default_region, *self.allowed_countries])


class DeliverySettings(Strict):
    """Defaults of the retry policy; each destination may override them."""

    # 10 tries over about 1.5-2 h (30 s doubling, capped at 30 min), never beyond 4 h.
    max_attempts: int = Field(default=10, ge=1, le=100)
    retry_window_seconds: int = Field(default=4 * 3600, ge=60)
    backoff_base_seconds: float = Field(default=30.0, gt=0)
    backoff_max_seconds: float = Field(default=1800.0, gt=0)
    # How long claimed work stays a worker's without a heartbeat (renewed every third of it):
    # work held by a worker that died is claimed again within this.
    lease_seconds: int = Field(default=10, ge=3)
    sweep_interval_seconds: float = Field(default=5.0, gt=0)


class RetentionSettings(Strict):
    """How many days each kind of row is kept; `firstparty prune` and the server (daily) delete
    older rows. None keeps them for ever."""

    events_days: int | None = Field(default=400, ge=1)  # the cookie's own maximum lifetime
    tracks_days: int | None = Field(default=30, ge=1)  # the outgoing-request log
    otp_days: int | None = Field(default=30, ge=1)  # one-time codes and tries
    prune_interval_hours: float = Field(default=24.0, gt=0)
    prune_first_delay_seconds: float = Field(default=300.0, ge=0)  # after the server starts
    prune_chunk_rows: int = Field(default=1000, ge=1, le=100_000)
    prune_max_rows: int = Field(default=1_000_000, ge=1)  # per table and run: a bounded run


class DeliverySuccessRule(Strict):
    """A destination's share of delivered requests below `min_percent` over the window."""

    enabled: bool = True
    min_percent: float = Field(default=95.0, gt=0, le=100)
    window_minutes: int = Field(default=15, ge=1, le=1440)
    min_attempts: int = Field(default=20, ge=1)  # fewer requests in the window: no verdict


class QueueLagRule(Strict):
    """The longest-waiting due delivery has waited more than `max_seconds`."""

    enabled: bool = True
    max_seconds: int = Field(default=300, ge=1)


class SourceSilentRule(Strict):
    """A source's events over the last `window_minutes` below `min_percent` of the same minutes
    one week earlier, when that week had at least `min_last_week` events (its usual hours)."""

    enabled: bool = True
    window_minutes: int = Field(default=30, ge=5, le=1440)
    min_percent: float = Field(default=50.0, gt=0, le=100)
    min_last_week: int = Field(default=20, ge=1)


class ServerErrorsRule(Strict):
    """More than `max_count` answers 500 over the window (every process together)."""

    enabled: bool = True
    max_count: int = Field(default=10, ge=0)
    window_minutes: int = Field(default=5, ge=1, le=1440)


class DestinationSetupRule(Strict):
    """A destination in its platform's test mode, unable to send (a secret not set), with a
    credential expiring within `credential_warning_days` (its `credential_expires_at`), or whose
    newest request in the last `refused_window_minutes` was refused for its credential."""

    enabled: bool = True
    credential_warning_days: int = Field(default=14, ge=0, le=365)
    refused_window_minutes: int = Field(default=60, ge=1, le=1440)


class AlertWebhook(Strict):
    """A Slack or Google Chat incoming webhook (or any URL): JSON, signed when `secret` is set."""

    url: str = Field(pattern=r"^https?://[^\s]+$")
    secret: SecretStr | None = None  # "env:NAME"; signs the body (X-Firstparty-Signature)
    # "full": `text` and the alert's fields (Slack, your own receiver); "text": `text` alone
    # (Google Chat refuses fields it does not know).
    body: Literal["full", "text"] = "full"
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)


class AlertEmail(Strict):
    """Messages by SMTP; `starttls` upgrades a plain connection, `ssl` starts in TLS (465)."""

    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    to: list[str] = Field(min_length=1)
    username: str | None = None
    password: SecretStr | None = None  # "env:NAME"
    starttls: bool = True
    ssl: bool = False
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if not re.match(r"^[^@\s]+@[^@\s]+$", address):
                raise ValueError(f"{address!r} is not an email address")
        return value

    @model_validator(mode="after")
    def _one_tls(self) -> AlertEmail:
        if self.ssl and self.starttls:
            raise ValueError("choose ssl (TLS from the start, port 465) or starttls, not both")
        return self


class AlertSettings(Strict):
    """Alert rules (on by default) and where their messages go (docs/alerts.md)."""

    enabled: bool = True
    interval_seconds: float = Field(default=60.0, ge=1)
    # One message per rule and subject at most this often: a flapping rule sends nothing new.
    min_interval_minutes: float = Field(default=30.0, ge=0)
    lease_seconds: int = Field(default=120, ge=10)  # one evaluating process at a time
    delivery_success: DeliverySuccessRule = DeliverySuccessRule()
    queue_lag: QueueLagRule = QueueLagRule()
    source_silent: SourceSilentRule = SourceSilentRule()
    server_errors: ServerErrorsRule = ServerErrorsRule()
    destination_setup: DestinationSetupRule = DestinationSetupRule()
    webhook: AlertWebhook | None = None
    email: AlertEmail | None = None

    @model_validator(mode="after")
    def _lease_outlives_a_round(self) -> AlertSettings:
        if self.lease_seconds <= self.interval_seconds:
            raise ValueError("lease_seconds must be longer than interval_seconds")
        return self


class ReportsSettings(Strict):
    """How the admin reports read (docs/admin.md)."""

    # The time zone whose days the reports count by, unless the viewer picks another (`tz`).
    time_zone: str = "UTC"
    # How often each funnel's preset ranges are computed again in the background (docs/admin.md).
    funnel_refresh_minutes: int = Field(default=60, ge=5, le=24 * 60)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from firstparty.reports import period

        period.zone(value)  # ValueError names the bad name
        return value


class FunnelSettings(Strict):
    """A `[[funnels]]` entry: ordered steps, one a line (reports/funnel_spec.py, docs/admin.md)."""

    name: str
    steps: list[str]
    window_hours: int = 24

    @model_validator(mode="after")
    def _steps_parse(self) -> FunnelSettings:
        from firstparty.reports import funnel_spec

        funnel_spec.parse(self.name, self.steps, self.window_hours)  # ValueError names the part
        return self


class Settings(Strict):
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    admin_token: SecretStr | None = None
    # A server database's generated admin token: only its keyed hash, read from the database
    # at start (store/instance.py); set by the app, never by the config file.
    admin_token_digest: str | None = None
    # When set, GET /metrics asks for `Authorization: Bearer <metrics_token>` (else it is open).
    metrics_token: SecretStr | None = None
    secret_key: SecretStr
    config_path: str | None = None
    # The demo site at /demo/: None (unset) means on with SQLite, off with a server database.
    demo: bool | None = None
    # The external base URL (e.g. https://t.example.com), where an absolute URL is needed (the
    # Segment settings, the demo's snippet); the Host header is never used for one.
    public_url: str | None = None
    cookie: CookieSettings = CookieSettings()
    collect: CollectSettings = CollectSettings()
    otp: OtpSettings = OtpSettings()
    delivery: DeliverySettings = DeliverySettings()
    retention: RetentionSettings = RetentionSettings()
    alerts: AlertSettings = AlertSettings()
    reports: ReportsSettings = ReportsSettings()
    sources: list[SourceSettings] = []
    # Each entry is parsed by its type's own settings schema (see `destinations.registry`).
    destinations: list[Any] = []
    # People chosen by rules over their events, kept in sync on audience destinations
    # (audiences/definition.py, docs/audiences.md).
    audiences: list[AudienceSettings] = []
    # Funnels shown under /admin/reports/funnels, beside those saved from the UI.
    funnels: list[FunnelSettings] = []
    # A destination whose `env:` secret is not set: by default the server starts, keeps routing
    # its events (they wait, pending) and reports it; `strict_start = true` refuses to start.
    strict_start: bool = False
    misconfigured: dict[str, list[str]] = {}  # destination name -> the unset variables (computed)

    @field_validator("secret_key")
    @classmethod
    def _secret_is_safe(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw.lower() in UNSAFE_SECRETS or len(raw) < 32:
            raise ValueError("secret_key must be at least 32 random characters, not a placeholder")
        return value

    @field_validator("admin_token")
    @classmethod
    def _admin_token_is_safe(cls, value: SecretStr | None) -> SecretStr | None:
        raw = value.get_secret_value() if value is not None else None
        if raw is not None and (raw.lower() in UNSAFE_SECRETS or len(raw) < MIN_ADMIN_TOKEN):
            raise ValueError(
                f"admin_token must be at least {MIN_ADMIN_TOKEN} random characters, "
                "not a placeholder"
            )
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url_is_an_origin(cls, value: str | None) -> str | None:
        if value is not None and not _ORIGIN.match(value.rstrip("/")):
            raise ValueError(f"public_url {value!r} must look like https://t.example.com")
        return value.rstrip("/") if value is not None else None

    @field_validator("funnels")
    @classmethod
    def _unique_funnels(cls, value: list[FunnelSettings]) -> list[FunnelSettings]:
        names = [f.name for f in value]
        if len(names) != len(set(names)):
            raise ValueError(f"funnel names must be unique: {sorted(names)}")
        return value

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, value: list[SourceSettings]) -> list[SourceSettings]:
        names = [s.name for s in value]
        keys = [s.write_key.get_secret_value() for s in value]
        if len(set(names)) != len(names):
            raise ValueError("source names must be unique")
        if len(set(keys)) != len(keys):
            raise ValueError("write keys must be unique")
        return value

    @field_validator("destinations")
    @classmethod
    def _parse_destinations(cls, value: list[Any]) -> list[Any]:
        # Imported here: the registry imports every adapter, needed at start-up, not at import.
        from firstparty.destinations import registry

        return registry.parse_all(value)

    @model_validator(mode="after")
    def _audiences_have_their_destinations(self) -> Settings:
        """Each audience names existing destinations of an audience type, once per name."""
        from firstparty.audiences import registry

        names = [a.name for a in self.audiences]
        if len(set(names)) != len(names):
            raise ValueError("audience names must be unique")
        kinds = {d.name: d.type for d in self.destinations}
        for index, audience in enumerate(self.audiences):
            for name in audience.destinations:
                kind = kinds.get(name)
                if kind is None:
                    raise ValueError(
                        f"audiences[{index}].destinations: no destination named {name!r}"
                    )
                if kind not in registry.ADAPTERS:
                    known = ", ".join(sorted(registry.ADAPTERS)) or "none installed"
                    raise ValueError(
                        f"audiences[{index}].destinations: {name!r} is a {kind} destination, "
                        f"not an audience one ({known})"
                    )
        return self

    @property
    def admin_on(self) -> bool:
        """Whether the admin UI and API accept a token at all."""
        return self.admin_token is not None or self.admin_token_digest is not None

    def admin_token_matches(self, given: str) -> bool:
        """The configured token, or (a server database's generated one) its keyed hash."""
        if self.admin_token is not None:
            return hmac.compare_digest(given.encode(), self.admin_token.get_secret_value().encode())
        if self.admin_token_digest is None:
            return False
        secret = self.secret_key.get_secret_value()
        return hmac.compare_digest(admin_token_digest(secret, given), self.admin_token_digest)

    @property
    def admin_tag(self) -> str:
        """Names the token in force (sessions are bound to it: a new token ends them)."""
        token = self.admin_token.get_secret_value() if self.admin_token else ""
        return hashlib.sha256((token or self.admin_token_digest or "").encode()).hexdigest()

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def demo_on(self) -> bool:
        """`demo` as set, else on with the embedded SQLite and off with a server database."""
        return self.is_sqlite if self.demo is None else self.demo


ENV_KEYS = {
    "FIRSTPARTY_DATABASE_URL": "database_url",
    "FIRSTPARTY_REDIS_URL": "redis_url",
    "FIRSTPARTY_ADMIN_TOKEN": "admin_token",
    "FIRSTPARTY_METRICS_TOKEN": "metrics_token",
    "FIRSTPARTY_SECRET_KEY": "secret_key",
}


def load(environ: Mapping[str, str] | None = None, *, config_path: str | None = None) -> Settings:
    """Build and validate the settings; raise ConfigError naming the key on any problem."""
    env = dict(os.environ if environ is None else environ)
    path = config_path or env.get("FIRSTPARTY_CONFIG")
    if path is None and Path("firstparty.toml").exists():
        path = "firstparty.toml"
    data: dict[str, Any] = _read_toml(path) if path else {}
    unset: dict[int, list[str]] = {}  # destinations[i] -> its variables that are not set
    data = _resolve_env_refs(data, env, "", unset)
    data["misconfigured"] = _misconfigured(data, unset)
    for var, key in ENV_KEYS.items():
        if env.get(var):
            data[key] = env[var]
    data["config_path"] = path
    data.setdefault("database_url", DEFAULT_DATABASE_URL)
    if "secret_key" not in data:
        data["secret_key"] = _embedded_secret(data["database_url"])
    if "admin_token" not in data:
        data["admin_token"] = embedded_admin_token(data["database_url"])
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    return settings


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} not found (FIRSTPARTY_CONFIG)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path!r} is not valid TOML: {exc}") from None


def _resolve_env_refs(
    value: Any, env: Mapping[str, str], where: str, unset: dict[int, list[str]]
) -> Any:
    """`"env:NAME"` values replaced by the variable. An unset one stops the start, except in a
    destination (unless `strict_start`): it is noted in `unset` and the destination reported."""
    if isinstance(value, dict):
        return {
            k: _resolve_env_refs(v, env, f"{where}.{k}" if where else k, unset)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_resolve_env_refs(v, env, f"{where}[{i}]", unset) for i, v in enumerate(value)]
    if isinstance(value, str) and value.startswith("env:"):
        name = value[4:]
        if env.get(name):
            return env[name]
        found = _DESTINATION_AT.match(where)
        if found is None:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        unset.setdefault(int(found.group(1)), []).append(name)
        return UNSET_SECRET
    return value


_DESTINATION_AT = re.compile(r"^destinations\[(\d+)\]")
UNSET_SECRET = "unset-secret-placeholder-00000000000000000000"


def _misconfigured(data: dict[str, Any], unset: dict[int, list[str]]) -> dict[str, list[str]]:
    """Destination name -> its unset variables; with `strict_start`, refuse to start instead."""
    destinations = data.get("destinations") or []
    found: dict[str, list[str]] = {}
    for index, names in unset.items():
        entry = destinations[index] if isinstance(destinations[index], dict) else {}
        where = f"destinations[{index}]"
        if data.get("strict_start"):
            raise ConfigError(f"{where}: environment variable {names[0]} is not set")
        found[str(entry.get("name") or where)] = names
    return found


def _embedded_secret(database_url: str) -> str:
    """On the embedded default, generate the secret once and keep it beside the database."""
    if not database_url.startswith("sqlite"):
        raise ConfigError("secret_key: FIRSTPARTY_SECRET_KEY is required with a server database")
    kept = _kept_beside(database_url, ".secret", 48)
    return kept if kept is not None else secrets.token_urlsafe(48)


def admin_token_digest(secret: str, token: str) -> str:
    """The keyed hash a server database keeps of a generated admin token."""
    return hmac.digest(secret.encode(), b"admin-token:" + token.encode(), "sha256").hex()


def embedded_admin_token(database_url: str) -> str | None:
    """On the embedded default with no FIRSTPARTY_ADMIN_TOKEN, the admin UI is on with a token
    generated once and kept beside the database (`<database>.admin-token`, mode 0600)."""
    if not database_url.startswith("sqlite"):
        return None
    return _kept_beside(database_url, ".admin-token", 24)


def admin_token_file(database_url: str) -> Path | None:
    """Where `embedded_admin_token` keeps the token, for the start-up banner."""
    db_path = database_url.split("///", 1)[-1] if "///" in database_url else ""
    return Path(db_path + ".admin-token") if db_path and db_path != ":memory:" else None


def _kept_beside(database_url: str, suffix: str, size: int) -> str | None:
    """A random value made once and kept in a 0600 file beside the SQLite database; None for an
    in-memory database."""
    db_path = database_url.split("///", 1)[-1] if "///" in database_url else ""
    if not db_path or db_path == ":memory:":
        return None
    kept = Path(db_path + suffix)
    if kept.exists():
        return kept.read_text().strip()
    kept.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(size)
    fd = os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def _describe(exc: ValidationError) -> str:
    return "invalid settings: " + "; ".join(describe_errors(exc))


def describe_errors(exc: ValidationError, prefix: str = "") -> list[str]:
    """Every error (not only the first), each naming its key, in words a person reads: a string's
    length in characters (pydantic says "items" for a secret), no "Value error, " prefix."""
    lines = []
    for err in exc.errors():
        key = ".".join([prefix, *(str(p) for p in err["loc"])] if prefix else map(str, err["loc"]))
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        else:
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] in {"too_short", "too_long"} and isinstance(
                err.get("input"), str | SecretStr
            ):
                message = message.replace(" items", " characters")
        nested = key and message.startswith((f"{key}[", f"{key}."))  # names its own key
        lines.append(message if nested else f"{key or '(top level)'}: {message}")
    return lines
