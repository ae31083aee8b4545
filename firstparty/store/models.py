"""SQL tables (SQLAlchemy Core). The same schema runs on SQLite, PostgreSQL and MySQL/MariaDB.

Personal data never reaches these tables in clear: events keep only normalised SHA-256 hashes
(`identity.pii`), phones are found again by a keyed hash (HMAC with the secret key).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python, naive UTC with microseconds in every database."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


# JSONB on PostgreSQL, JSON elsewhere (MariaDB: LONGTEXT with a JSON_VALID check).
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def CaseSensitive(length: int) -> sa.String:
    """A string compared byte-exact on every engine (MySQL's default collation folds case)."""
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
    )


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

# Sources created with `firstparty sources create` (config-file sources live in the config).
sources = sa.Table(
    "sources",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("write_key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("key_hint", sa.String(16), nullable=False),
    sa.Column("origins", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # Added by 0006_abuse: the source's own rate limits; null takes [collect]'s defaults.
    sa.Column("rate_limit_per_second", sa.Float(), nullable=True),
    sa.Column("rate_limit_burst", sa.Integer(), nullable=True),
    # Added by 0007_first_hour: a disabled source's key is refused until it is enabled again.
    sa.Column("disabled_at", UTCDateTime(), nullable=True),
)

# People proven by a verified phone (identity); `id` is the opaque user_id.
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("phone_key", sa.String(64), nullable=True, unique=True),  # HMAC(secret, E.164)
    sa.Column("phone_hashes", JSONType, nullable=False),  # {"ph": sha256, "ph_e164": sha256}
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("verified_at", UTCDateTime(), nullable=True),
)

# One row per browser (the fp_id cookie). first_touch is written once and never changed.
visitors = sa.Table(
    "visitors",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id"), nullable=True, index=True),
    sa.Column("first_seen_at", UTCDateTime(), nullable=False),
    sa.Column("last_seen_at", UTCDateTime(), nullable=False),
    sa.Column("first_touch", JSONType, nullable=False),
    sa.Column("last_touch", JSONType, nullable=False),
    # Added by 0005_ingest_corners: the visitor's current GA4 session (30 minutes of inactivity
    # end it) and how many it has had; written with last_seen_at, read with the visitor.
    sa.Column("session_started_at", UTCDateTime(), nullable=True),
    sa.Column("session_number", sa.Integer(), nullable=True),
)

# Every click id a visitor landed with, with the time it was first seen (never overwritten).
# A server event's own click ids (a CRM's, 0005_ingest_corners) with no visitor to hold them
# are kept for that event alone: `event_pk` set, `visitor_id` null.
click_ids = sa.Table(
    "click_ids",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("visitor_id", sa.String(32), nullable=True),
    sa.Column("event_pk", sa.String(26), nullable=True, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("value", CaseSensitive(500), nullable=False),
    sa.Column("first_seen_at", UTCDateTime(), nullable=False),
    sa.Column("url", sa.Text(), nullable=True),
    sa.UniqueConstraint("visitor_id", "kind", "value"),
)

# On PostgreSQL, `events` and `tracks` are partitioned by month of their time column (received_at,
# created_at; 0015_partition, store/partitions.py): their primary keys there also hold that column
# (a partitioned table's unique keys must), so the unique (event_id, source) below and the foreign
# keys to events.id and tracks.id exist on SQLite and MySQL/MariaDB only. PostgreSQL refuses a
# duplicate through `event_keys` instead, written in the event's transaction.
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.String(26), primary_key=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("event_id", CaseSensitive(128), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("occurred_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("received_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("visitor_id", sa.String(32), nullable=True, index=True),
    sa.Column("user_id", sa.String(32), nullable=True, index=True),
    sa.Column("request", JSONType, nullable=False),  # as received, PII replaced by hashes
    sa.Column("response", JSONType, nullable=False),  # the answer sent
    sa.Column("user", JSONType, nullable=False),  # hashed identifiers (identity.pii)
    sa.Column("context", JSONType, nullable=False),  # ip, user_agent, pixel cookies
    sa.Column("consent", JSONType, nullable=False),
    # Added by 0006_abuse: why the event looks automated (a known crawler, a headless browser...);
    # null for a person. Flagged events are kept but not forwarded to ad platforms by default.
    sa.Column("bot", sa.String(32), nullable=True),
    # Added by 0012_reports: whether a destination took it as a conversion (destinations'
    # `is_conversion`, decided at ingest); null for events stored before, counted by
    # reports.rollups' legacy rule.
    sa.Column("converted", sa.Boolean(), nullable=True),
    # 0025_event_id_key: the event id first, so this one index also finds an event by its id
    # alone (the admin's filter). Event ids are random (UUIDs from fp.js and the Segment SDKs):
    # each is an insert at a random place in the index, and a second index on event_id doubled
    # that cost as the table grew.
    sa.UniqueConstraint("event_id", "source"),
    sa.Index("ix_events_source_received_at", "source", "received_at"),
    # 0009_rollups: one name's events newest first, read from the index (was on name alone).
    sa.Index("ix_events_name_id", "name", "id"),
    # 0021_source_id: one source's events newest first, likewise.
    sa.Index("ix_events_source_id", "source", "id"),
)

# The ingest de-duplication of a partitioned `events` (PostgreSQL, 0015_partition): one row per
# (event_id, source) stored, naming the event's row; also how an event is found by its id there
# (0025_event_id_key: `events` has no index of its own on event_id). Empty on SQLite and
# MySQL/MariaDB, where the unique (event_id, source) of `events` itself refuses a duplicate.
# Goes with its event.
event_keys = sa.Table(
    "event_keys",
    metadata,
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("event_id", CaseSensitive(128), nullable=False),
    sa.Column("event_pk", sa.String(26), nullable=False, index=True),
    sa.PrimaryKeyConstraint("event_id", "source"),
)

# The partial index's condition, also written into the queries that must use it (SQLite picks a
# partial index only for a query whose own text implies its condition, never for a parameter).
FAILED_ONLY = "status = 'failed'"
# The longest `last_error` kept (characters): an index entry stays under PostgreSQL's B-tree limit
# (2,704 bytes) whatever the text; the platforms' messages are cut at 500 bytes before this.
LAST_ERROR_CHARS = 512

# The outbox: one row per (event, destination) that wants it. Written in the event's transaction.
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    # Found by event through the unique (event_pk, destination) below (0026_deliveries_event_pk
    # dropped an index on event_pk alone, which it duplicated).
    sa.Column("event_pk", sa.String(26), sa.ForeignKey("events.id"), nullable=False),
    sa.Column("destination", sa.String(64), nullable=False),
    # pending | inflight | confirming | delivered | test | failed | skipped (outbox.DeliveryStatus)
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, default=0),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False),  # also the lease end when inflight
    sa.Column("occurred_at", UTCDateTime(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("first_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    # Added by 0004_delivery_follow_up: the platform's id of the accepted request, kept while
    # its outcome is followed up (status `confirming`) and after, and when to stop asking.
    sa.Column("request_id", sa.String(255), nullable=True),
    sa.Column("confirm_until", UTCDateTime(), nullable=True),
    # Added by 0016_reports_source: the event's source, so the outbox counts (delivery_rollups)
    # can be read per source; null only for rows a test or tool wrote without it.
    sa.Column("source", sa.String(64), nullable=True),
    sa.UniqueConstraint("event_pk", "destination"),
    sa.Index("ix_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    sa.Index("ix_deliveries_destination_status", "destination", "status"),
    # 0023_failed_index: the failures page (its newest failed work, and the failed work by
    # destination and reason), read from this index alone. On SQLite and PostgreSQL it holds
    # the failed rows only (a partial index, kept up only as rows enter or leave `failed`;
    # a query uses it when it says status = 'failed' in its text: FAILED_ONLY); MySQL and
    # MariaDB have no partial indexes and keep every row in it, with a prefix of the error.
    sa.Index(
        "ix_deliveries_failed",
        "status",
        "updated_at",
        "id",
        "destination",
        "last_error",
        sqlite_where=sa.text(FAILED_ONLY),
        postgresql_where=sa.text(FAILED_ONLY),
        mysql_length={"last_error": 191},
    ),
    # 0027_failure_counts, PostgreSQL only: a replay's chunk (and the failures page's preview)
    # takes a destination's failed rows in id order, the first 250. SQLite's (destination,
    # status) index ends with the rowid and InnoDB's with the primary key, so they give that
    # order; PostgreSQL's does not, and it read and sorted every failed row of the destination.
    sa.Index(
        "ix_deliveries_failed_destination_id",
        "destination",
        "id",
        postgresql_where=sa.text(FAILED_ONLY),
    ).ddl_if(dialect="postgresql"),
)

# The outgoing-request log ("tracks"): one row per HTTP request sent (or built, when dry_run).
tracks = sa.Table(
    "tracks",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("destination", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # delivered | failed | pending | skipped
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("method", sa.String(8), nullable=False),
    sa.Column("url", sa.Text(), nullable=False),  # secrets redacted
    sa.Column("request", JSONType, nullable=True),  # body, secrets redacted
    # 0024_request_bytes: the body's size as logged (its JSON text), so a list leaves a long one
    # out without reading it; null for rows logged before.
    sa.Column("request_bytes", sa.Integer(), nullable=True),
    sa.Column("response_status", sa.Integer(), nullable=True),
    sa.Column("response_body", sa.Text(), nullable=True),
    sa.Column("duration_ms", sa.Float(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
    # 0009_rollups: a page of one status (and destination) newest first, read from the index.
    sa.Index("ix_tracks_destination_status_id", "destination", "status", "id"),
    sa.Index("ix_tracks_status_id", "status", "id"),
)

# Which events (and deliveries) each outgoing request carried: the seed's incoming_id link.
track_events = sa.Table(
    "track_events",
    metadata,
    sa.Column(
        "track_id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        sa.ForeignKey("tracks.id"),
        primary_key=True,
    ),
    sa.Column(
        "delivery_id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        sa.ForeignKey("deliveries.id"),
        primary_key=True,
    ),
    sa.Column("event_pk", sa.String(26), nullable=False, index=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
)

# One-time codes: only a keyed hash of the code is kept.
otp_codes = sa.Table(
    "otp_codes",
    metadata,
    sa.Column("id", sa.String(26), primary_key=True),
    sa.Column("phone_key", sa.String(64), nullable=False, index=True),
    sa.Column("code_hash", sa.String(64), nullable=True),  # null when the provider checks codes
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, default=0),
    sa.Column("used_at", UTCDateTime(), nullable=True),
    sa.Column("ip", sa.String(64), nullable=True),  # keyed hash of the client address (/64 on IPv6)
    # Added by 0003_identity: set once the SMS went out; only a sent code can be checked.
    sa.Column("sent_at", UTCDateTime(), nullable=True),
    # Added by 0006_abuse: the visitor (fp_id) that asked, for the per-visitor limit.
    sa.Column("visitor_id", sa.String(32), nullable=True),
    sa.Index("ix_otp_codes_ip_created_at", "ip", "created_at"),
    sa.Index("ix_otp_codes_visitor_id_created_at", "visitor_id", "created_at"),
    sa.Index("ix_otp_codes_created_at", "created_at"),
)

# Audit of every replay, for the operator.
replays = sa.Table(
    "replays",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("filters", JSONType, nullable=False),
    sa.Column("requeued", sa.Integer(), nullable=False),
    sa.Column("skipped", sa.Integer(), nullable=False),
)

# Every code tried (right or wrong), for the per-IP and per-phone limits on tries (0003_identity).
otp_attempts = sa.Table(
    "otp_attempts",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("phone_key", sa.String(64), nullable=False),  # HMAC(secret, E.164)
    sa.Column("ip", sa.String(64), nullable=True),  # keyed hash, as in otp_codes
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_otp_attempts_ip_created_at", "ip", "created_at"),
    sa.Index("ix_otp_attempts_phone_key_created_at", "phone_key", "created_at"),
)

# Which user each visitor belonged to and when (0003_identity): a visitor that moves to another
# user closes its old row, so its past stays with the user it had then.
visitor_users = sa.Table(
    "visitor_users",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("visitor_id", sa.String(32), nullable=False, index=True),
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("linked_at", UTCDateTime(), nullable=False),
    sa.Column("unlinked_at", UTCDateTime(), nullable=True),
)

# Admin sessions ended by signing out (0006_abuse): a session cookie whose nonce is here is
# refused by every process until its own expiry, after which the row may be pruned.
admin_revocations = sa.Table(
    "admin_revocations",
    metadata,
    sa.Column("nonce", sa.String(64), primary_key=True),
    sa.Column("expires_at", UTCDateTime(), nullable=False, index=True),
)

# Failed admin sign-ins per client address (0006_abuse), for growing delays across processes.
admin_login_failures = sa.Table(
    "admin_login_failures",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("address", sa.String(64), nullable=False),  # keyed hash of the client address
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_admin_login_failures_address_created_at", "address", "created_at"),
)

# Facts about this installation (0007_first_hour): the secret key's fingerprint, so that a
# different FIRSTPARTY_SECRET_KEY is caught at start-up instead of turning every key into a 401;
# the hash of a generated admin token on a server database.
instance = sa.Table(
    "instance",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text(), nullable=False),
)

# Destinations added in the admin UI (0008_destinations), beside the config file's. `entry` is the
# `[[destinations]]` entry without name and type; each secret in it is kept as an `env:NAME`
# reference or as `enc:<Fernet token>` (destinations/stored.py), never in clear. `version` takes
# the next number on every change, so `count(*), max(version)` tells a process to reload.
destinations = sa.Table(
    "destinations",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("entry", JSONType, nullable=False),
    sa.Column("disabled_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("version", sa.BigInteger(), nullable=False),
)

# Hourly event counts (0009_rollups, hourly since 0012_reports), kept by reports/rollups.py in
# each batch's transaction: one row per UTC hour of occurred_at (its start), `key` (the SHA-256
# of the other dimensions: a unique index over the text columns would pass MariaDB's 3,072-byte
# key limit) and `shard`, the writing connection's (store/shards.py), so concurrent
# transactions do not queue on one hot row. Reports sum over shards. No personal data.
event_rollups = sa.Table(
    "event_rollups",
    metadata,
    sa.Column("hour", UTCDateTime(), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("shard", sa.SmallInteger(), primary_key=True, autoincrement=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("bot", sa.Boolean(), nullable=False),
    sa.Column("converted", sa.Boolean(), nullable=False),
    sa.Column("utm_source", sa.String(255), nullable=False),
    sa.Column("utm_medium", sa.String(255), nullable=False),
    sa.Column("utm_campaign", sa.String(255), nullable=False),
    sa.Column("click_kinds", sa.String(128), nullable=False),  # all kinds: 70 characters
    sa.Column("count", sa.BigInteger(), nullable=False),
    sqlite_with_rowid=False,  # 0020_rollups_clustered: rows in key order, hour first
)

# Outbox rows per UTC hour of creation, destination and status (0009_rollups, hourly since
# 0012_reports), moved by
# delivery/tally.py in the transaction of every status change, sharded as event_rollups (ingest
# and every worker move the same few rows). No personal data.
delivery_rollups = sa.Table(
    "delivery_rollups",
    metadata,
    sa.Column("hour", UTCDateTime(), primary_key=True),
    sa.Column("destination", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(16), primary_key=True),
    sa.Column("source", sa.String(64), primary_key=True),  # 0016_reports_source; "" unknown
    sa.Column("shard", sa.SmallInteger(), primary_key=True, autoincrement=False),
    sa.Column("count", sa.BigInteger(), nullable=False),
    sqlite_with_rowid=False,  # 0020_rollups_clustered: rows in key order, hour first
)

# Failed outbox rows by destination and last error (0027_failure_counts, delivery/failures.py):
# what a replay would take, counted as rows enter and leave `failed` in the outbox's own
# transactions (and as erasure and retention delete them), so the failures page reads these few
# rows instead of counting every failed row. `reason_key` is the SHA-256 of the error text (a
# key of fixed width whatever the text); sharded as delivery_rollups (every worker moves them).
failure_counts = sa.Table(
    "failure_counts",
    metadata,
    sa.Column("destination", sa.String(64), primary_key=True),
    sa.Column("reason_key", sa.String(64), primary_key=True),
    sa.Column("shard", sa.SmallInteger(), primary_key=True, autoincrement=False),
    sa.Column("reason", sa.Text(), nullable=True),  # deliveries.last_error; None: no error text
    sa.Column("count", sa.BigInteger(), nullable=False),
    sqlite_with_rowid=False,
)

# Alerts (0010_alerts, alerts/state.py). One row per rule and subject (a destination, a source,
# "outbox", "server"): its state now and since when. `alert_notices` holds, per channel, the
# state last announced and when, so that two processes or a restart never announce twice and a
# flapping rule waits out the minimum interval. `alert_lease`: one evaluating process at a time.
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("rule", sa.String(32), primary_key=True),
    sa.Column("subject", sa.String(128), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # firing | resolved (rules.AlertState)
    sa.Column("since", UTCDateTime(), nullable=False),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

alert_notices = sa.Table(
    "alert_notices",
    metadata,
    sa.Column("rule", sa.String(32), primary_key=True),
    sa.Column("subject", sa.String(128), primary_key=True),
    sa.Column("channel", sa.String(16), primary_key=True),  # webhook | email
    sa.Column("state", sa.String(16), nullable=False),  # the state last announced
    sa.Column("sent_at", UTCDateTime(), nullable=False),
)

# Every message tried, one row each (`state.record_notice`): what the Alerts page lists.
alert_history = sa.Table(
    "alert_history",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("at", UTCDateTime(), nullable=False, index=True),
    sa.Column("rule", sa.String(32), nullable=False),
    sa.Column("subject", sa.String(128), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # what was announced: firing | resolved
    sa.Column("channel", sa.String(16), nullable=False),  # webhook | email
    sa.Column("outcome", sa.String(16), nullable=False),  # sent | failed (rules.NoticeOutcome)
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Column("error", sa.Text(), nullable=True),  # why it failed; retried at the next round
)

alert_lease = sa.Table(
    "alert_lease",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
)

# Answers 500, counted per process and written here at each alerts round (alerts/state.py), so
# the server-errors rule sees every process's.
server_errors = sa.Table(
    "server_errors",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("at", UTCDateTime(), nullable=False, index=True),
    sa.Column("count", sa.Integer(), nullable=False),
)

# Audiences (0011_audiences, audiences/). Per audience and destination, the members the platform
# acknowledged: the hashes sent (needed to remove them later, even once the person is erased
# here) and their digest (a member whose hashes changed is sent again). One row per sync run and
# destination, the audience's size at each run (the chart), and the schedule: when each audience
# runs next and which process holds it (one at a time).
audience_members_acked = sa.Table(
    "audience_members_acked",
    metadata,
    sa.Column("audience", sa.String(64), primary_key=True),
    sa.Column("destination", sa.String(64), primary_key=True),
    sa.Column("member_key", sa.String(40), primary_key=True),  # u:<user id> | v:<visitor id>
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("identifiers", JSONType, nullable=False),  # stored hashes only
    sa.Column("acked_at", UTCDateTime(), nullable=False),
    # Set while the platform has accepted the add but not yet given its verdict (Google's
    # requestId, asked with `requestStatus:retrieve` at the next runs); None once confirmed.
    sa.Column("request_id", sa.String(128), nullable=True),
)

audience_runs = sa.Table(
    "audience_runs",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("audience", sa.String(64), nullable=False),
    sa.Column("destination", sa.String(64), nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),  # schedule | command | button
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("size", sa.Integer(), nullable=False),  # members this destination should hold
    sa.Column("adds", sa.Integer(), nullable=False),  # acknowledged additions
    sa.Column("removes", sa.Integer(), nullable=False),  # acknowledged removals
    sa.Column("errors", sa.Integer(), nullable=False),  # members not acknowledged: next run
    sa.Column("detail", sa.Text(), nullable=True),
    sa.Index("ix_audience_runs_audience_destination_id", "audience", "destination", "id"),
)

audience_sizes = sa.Table(
    "audience_sizes",
    metadata,
    sa.Column("audience", sa.String(64), primary_key=True),
    sa.Column("at", UTCDateTime(), primary_key=True),
    sa.Column("size", sa.Integer(), nullable=False),  # people matching the rules
    sa.Column("consented", sa.Integer(), nullable=False),  # of whom ad platforms may get
)

audience_schedule = sa.Table(
    "audience_schedule",
    metadata,
    sa.Column("audience", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("lease_until", UTCDateTime(), nullable=False),
    sa.Column("next_run_at", UTCDateTime(), nullable=False),
)

# Conversions per UTC hour of occurred_at with their credit (0013_attribution,
# reports/conversion_rollups.py), added in the ingest transaction of each converting batch:
# source, event name, the person's first and last touch (channel, source, medium, campaign),
# cross-device, currency, the ad platforms with a click id in window and those whose browser
# pixel would likely have missed the conversion (`recovered`: "meta:no_cookie+aged,..."). `key`
# is the SHA-256 of those dimensions, `shard` as in event_rollups. `value_micros`: the summed
# value in millionths of the currency (exact sums). No personal data.
conversion_rollups = sa.Table(
    "conversion_rollups",
    metadata,
    sa.Column("hour", UTCDateTime(), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("shard", sa.SmallInteger(), primary_key=True, autoincrement=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("ft_channel", sa.String(32), nullable=False),
    sa.Column("ft_source", sa.String(255), nullable=False),
    sa.Column("ft_medium", sa.String(255), nullable=False),
    sa.Column("ft_campaign", sa.String(255), nullable=False),
    sa.Column("lt_channel", sa.String(32), nullable=False),
    sa.Column("lt_source", sa.String(255), nullable=False),
    sa.Column("lt_medium", sa.String(255), nullable=False),
    sa.Column("lt_campaign", sa.String(255), nullable=False),
    sa.Column("cross_device", sa.Boolean(), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),  # "" when the event had no value
    sa.Column("clicked", sa.String(64), nullable=False),
    sa.Column("recovered", sa.String(128), nullable=False),
    sa.Column("count", sa.BigInteger(), nullable=False),
    sa.Column("value_micros", sa.BigInteger(), nullable=False),
)

# Funnels saved from the admin UI (0013_attribution) beside the config file's `[[funnels]]`:
# `steps` as the config writes them (reports/funnel_spec.py parses both the same way).
funnels = sa.Table(
    "funnels",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("steps", JSONType, nullable=False),
    sa.Column("window_hours", sa.Integer(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

# Funnels computed off the request path (0022_funnel_results, reports/funnel_rounds.py): one row
# per funnel, definition hash, preset range and zone, replaced by each round; `funnel_schedule`:
# when each funnel is next due and which process holds it (a lease).
funnel_results = sa.Table(
    "funnel_results",
    metadata,
    sa.Column("funnel", sa.String(64), primary_key=True),
    sa.Column("definition", sa.String(64), primary_key=True),
    sa.Column("range_key", sa.String(16), primary_key=True),
    sa.Column("zone", sa.String(64), primary_key=True),
    sa.Column("first_day", sa.Date(), nullable=False),
    sa.Column("last_day", sa.Date(), nullable=False),
    sa.Column("computed_at", UTCDateTime(), nullable=False),
    sa.Column("seconds", sa.Float(), nullable=False),
    sa.Column("rows_read", sa.Integer(), nullable=False),
    sa.Column("capped", sa.Boolean(), nullable=False),
    sa.Column("result", JSONType, nullable=False),
)

funnel_schedule = sa.Table(
    "funnel_schedule",
    metadata,
    sa.Column("funnel", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("lease_until", UTCDateTime(), nullable=False),
    sa.Column("next_run_at", UTCDateTime(), nullable=False),
)

# Delivery health and match quality (0017_health, delivery/health.py), moved in the worker's
# transaction that settles the work (beside delivery_rollups), sharded as event_rollups. One row
# per UTC hour of the settlement, destination, source and event name. No personal data.
# `delivery_outcomes`: settlements by outcome (delivered, test, accepted, retried, failed,
# skipped) and code (the platform's error code, the HTTP status, or the skip reason's shape).
delivery_outcomes = sa.Table(
    "delivery_outcomes",
    metadata,
    sa.Column("hour", UTCDateTime(), primary_key=True),
    sa.Column("destination", sa.String(64), primary_key=True),
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("event_name", sa.String(128), primary_key=True),
    sa.Column("outcome", sa.String(16), primary_key=True),
    sa.Column("code", sa.String(160), primary_key=True),
    sa.Column("shard", sa.SmallInteger(), primary_key=True, autoincrement=False),
    sa.Column("count", sa.BigInteger(), nullable=False),
)

# Events sent per request-latency bucket (`health.BUCKETS_MS`; an event counts the duration of
# the request that carried it): percentiles without reading `tracks`.
delivery_latency = sa.Table(
    "delivery_latency",
    metadata,
    sa.Column("hour", UTCDateTime(), primary_key=True),
    sa.Column("destination", sa.String(64), primary_key=True),
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("event_name", sa.String(128), primary_key=True),
    sa.Column("bucket", sa.SmallInteger(), primary_key=True, autoincrement=False),
    sa.Column("shard", sa.SmallInteger(), primary_key=True, autoincrement=False),
    sa.Column("count", sa.BigInteger(), nullable=False),
)

# Events a platform accepted, and of them those carrying each identifier (`identity.match_keys`;
# key "*": all of them), for the match quality report.
match_rollups = sa.Table(
    "match_rollups",
    metadata,
    sa.Column("hour", UTCDateTime(), primary_key=True),
    sa.Column("destination", sa.String(64), primary_key=True),
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("event_name", sa.String(128), primary_key=True),
    sa.Column("key", sa.String(16), primary_key=True),
    sa.Column("shard", sa.SmallInteger(), primary_key=True, autoincrement=False),
    sa.Column("count", sa.BigInteger(), nullable=False),
)

# The platforms' own verdicts on matching (delivery/verdicts.py, pulled on a schedule): Meta's
# Event Match Quality per event name, Google's match-rate range; one row per UTC day fetched.
platform_verdicts = sa.Table(
    "platform_verdicts",
    metadata,
    sa.Column("destination", sa.String(64), primary_key=True),
    sa.Column("event_name", sa.String(128), primary_key=True),
    sa.Column("metric", sa.String(32), primary_key=True),
    sa.Column("day", sa.Date(), primary_key=True),
    sa.Column("value", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Column("fetched_at", UTCDateTime(), nullable=False),
)

# Operator accounts of the admin UI (0018_operators, operators/accounts.py): the email case-folded
# (unique), an argon2id hash, a role (accounts.Role). Disabled accounts stay for the audit log.
operators = sa.Table(
    "operators",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("disabled_at", UTCDateTime(), nullable=True),
    sa.Column("last_sign_in_at", UTCDateTime(), nullable=True),
)

# Who changed what (0018_operators, operators/audit.py): newest first by id (keyset pages),
# filtered by action or actor. No secrets and no personal data in `detail`.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("actor", sa.String(254), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("subject", sa.String(254), nullable=False),
    sa.Column("detail", JSONType, nullable=False),
    sa.Index("ix_audit_log_action_id", "action", "id"),
    sa.Index("ix_audit_log_actor_id", "actor", "id"),
)
