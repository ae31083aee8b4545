"""Prometheus metrics, served at /metrics. Per process: with `serve --workers N` scrape each, or
set PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode) before start."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS = Counter(
    "firstparty_events_total",
    "Events answered by the collection API, by source and outcome",
    ["source", "outcome"],  # stored | duplicate | rejected_<status>
    registry=REGISTRY,
)
COMMIT_SECONDS = Histogram(
    "firstparty_group_commit_seconds",
    "Time to commit one group of events",
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
COMMIT_ROWS = Histogram(
    "firstparty_group_commit_rows",
    "Events per group commit",
    registry=REGISTRY,
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500),
)
INGEST_ERRORS = Counter(
    "firstparty_ingest_errors_total",
    "Unexpected exceptions while accepting an event (answered 500), by source and exception",
    ["source", "error"],  # error: the exception's class name
    registry=REGISTRY,
)
INGEST_WARNINGS = Counter(
    "firstparty_ingest_warnings_total",
    "Fields dropped from events that were kept (answered as warnings), by source and field",
    ["source", "field"],  # field: its first two parts, e.g. user.phone, properties.value
    registry=REGISTRY,
)
INGEST_BOTS = Counter(
    "firstparty_ingest_bots_total",
    "Events from robots (collect/bots.py), by source, reason and what was done",
    ["source", "reason", "action"],  # reason: crawler | headless | ...; action: flagged | dropped
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "firstparty_deliveries_total",
    "Delivery outcomes, by destination and outcome",
    ["destination", "outcome"],  # delivered | retry | failed | skipped
    registry=REGISTRY,
)
ADAPTER_ERRORS = Counter(
    "firstparty_adapter_errors_total",
    "Unexpected exceptions raised by an adapter, by destination and step",
    ["destination", "step"],  # skip | token_request | read_token | build | interpret | deliver
    registry=REGISTRY,
)
INTERNAL_ERRORS = Counter(
    "firstparty_internal_errors_total",
    "Requests answered 500 (each logged once with its error id), by exception",
    ["error"],  # error: the exception's class name
    registry=REGISTRY,
)
ADMIN_REFUSED = Counter(
    "firstparty_admin_signin_refused_total",
    "Admin sign-ins and admin API calls refused with 429 while their address waits after failures",
    ["surface"],  # ui: the /admin/login form | api: a bearer token on /v1/admin/*
    registry=REGISTRY,
)
OTP_REFUSED = Counter(
    "firstparty_otp_refused_total",
    "One-time codes refused by a limit (429) or the destination rules (422), by reason",
    # per_phone | resend_wait | per_ip | phones_per_ip | per_visitor | global_hour | global_day |
    # country | line_type | verifies_per_ip | verifies_per_phone | dead_code | rate_limit
    ["reason"],
    registry=REGISTRY,
)
DELIVERY_LAG = Gauge(
    "firstparty_delivery_lag_seconds",
    "Queue lag: how long the longest-waiting due delivery has waited (0 when none is due; "
    "NaN when the database did not answer). Read from the database at each scrape",
    registry=REGISTRY,
)
