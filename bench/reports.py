"""Reports at a busy site's rollups: `python bench/reports.py [--engine sqlite|postgresql]`.

Fills `event_rollups` and `delivery_rollups` directly (no events: the reports never read them)
with a busy site's shape: `--keys` event keys (source x name x bot x converted x first touch)
in `--shards` shards every UTC hour of `--days` days, and 4 destinations x 4 statuses x 2
sources in the same shards. Then, for 7, 30, 90 and 400-day ranges (Europe/Paris), it times
each report function of `reports.summary` and the report page and a CSV through the app
(in-process ASGI, signed in with the admin token as bench/growth.py does), first as written,
then after `store.shards.fold` (what serve's periodic round does to past hours; on PostgreSQL
followed by VACUUM ANALYZE, as autovacuum would, since the fold deletes two rows in three). It
checks that every number is identical before and after the fold and to the hourly path
(`reports.hourly`: each hour read back and put on its local day in Python, how the reports
worked before they summed local days in SQL), and times that path beside the new one in the
same run: the three reports by day, and the page's reads (`web.reports.gather`, against the six
reads the old way). Each time is the median of 3 and is judged against the target: every page
<= 500 ms (issue 14). `--profile` prints cProfile's top functions of the 90-day page.
Bounded: two or three minutes on SQLite at the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import pstats
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ingest as ingest_bench  # bench/ingest.py: a PostgreSQL database

from firstparty import settings as settings_mod
from firstparty.app import create_app
from firstparty.reports import hourly, period, summary
from firstparty.store import db, migrate, shards
from firstparty.store.models import delivery_rollups, event_rollups
from firstparty.web import reports as reports_ui

TOKEN = "bench-admin-token-0123456789-abcdef"
TARGET_MS = 500.0
RANGES = (7, 30, 90, 400)
ZONE = "Europe/Paris"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
NAMES = ("PageView", "ViewContent", "AddToCart", "Lead", "Purchase", "Signup")
SOURCES = ("www", "crm")
UTM = (("google", "cpc", "winter"), ("meta", "paid", "retarget"), ("", "", ""))
KINDS = ("gclid", "fbclid", "")
DESTINATIONS = ("meta", "google", "tiktok", "hook")
STATUSES = ("delivered", "failed", "skipped", "pending")
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "totals_per_day": summary.totals_per_day,
    "events_per_day": summary.events_per_day,
    "conversions_by_utm_source": summary.conversions_by_utm_source,
    "conversions_by_click_kind": summary.conversions_by_click_kind,
    "delivery_rates": summary.delivery_rates,
    "outcomes_per_day": summary.outcomes_per_day,
}
# The hourly path of the reports that have days, and of the page's reads.
HOURLY: dict[str, Callable[..., Any]] = {
    "totals_per_day": hourly.totals_per_day,
    "events_per_day": hourly.events_per_day,
    "outcomes_per_day": lambda engine, period: hourly.outcomes_per_day(engine, period=period),
}
PAGE_READS = "page's reads (gather)"


def gather_hourly(engine: sa.Engine, span: period.Period) -> reports_ui.Numbers:
    """What `web.reports.gather` read before: six queries, three of them hour by hour."""
    return reports_ui.Numbers(
        totals=hourly.totals_per_day(engine, period=span),
        per_day=hourly.events_per_day(engine, period=span),
        by_source=summary.conversions_by_utm_source(engine, period=span),
        by_click=summary.conversions_by_click_kind(engine, period=span),
        rates=summary.delivery_rates(engine, period=span),
        outcomes=hourly.outcomes_per_day(engine, period=span),
    )


def gather(engine: sa.Engine, span: period.Period) -> reports_ui.Numbers:
    return reports_ui.gather(engine, span, False)


def event_keys(count: int) -> list[dict[str, Any]]:
    keys = []
    for i in range(count):
        utm = UTM[i // 24 % len(UTM)]
        key = {
            "source": SOURCES[i % 2],
            "name": NAMES[i // 2 % len(NAMES)],
            "bot": i % 12 == 11,
            "converted": NAMES[i // 2 % len(NAMES)] in ("Lead", "Purchase"),
            "utm_source": utm[0],
            "utm_medium": utm[1],
            "utm_campaign": utm[2],
            "click_kinds": KINDS[i // 8 % len(KINDS)],
        }
        key["key"] = hashlib.sha256(repr((i, key)).encode()).hexdigest()
        keys.append(key)
    return keys


def fill(engine: sa.Engine, *, days: int, keys: int, shard_count: int) -> tuple[int, int]:
    """Write the rollups; answers (event rows, delivery rows)."""
    first = NOW.replace(minute=0) - timedelta(days=days)
    hours = [first + timedelta(hours=h) for h in range(days * 24 + 13)]
    the_keys = event_keys(keys)
    places = [(d, st, so) for d in DESTINATIONS for st in STATUSES for so in SOURCES]
    events_n = deliveries_n = 0
    batch_e: list[dict[str, Any]] = []
    batch_d: list[dict[str, Any]] = []

    def flush(conn: sa.Connection) -> None:
        if batch_e:
            conn.execute(event_rollups.insert(), batch_e)
        if batch_d:
            conn.execute(delivery_rollups.insert(), batch_d)
        batch_e.clear()
        batch_d.clear()

    with engine.begin() as conn:
        for n, hour in enumerate(hours):
            for k, key in enumerate(the_keys):
                for shard in range(shard_count):
                    count = 1 + (n * 7 + k * 13 + shard * 5) % 97
                    batch_e.append(key | {"hour": hour, "shard": shard, "count": count})
            for p, (dest, status, source) in enumerate(places):
                for shard in range(shard_count):
                    count = 1 + (n * 3 + p * 11 + shard) % 41
                    batch_d.append(
                        {
                            "hour": hour,
                            "destination": dest,
                            "status": status,
                            "source": source,
                            "shard": shard,
                            "count": count,
                        }
                    )
            events_n += len(the_keys) * shard_count
            deliveries_n += len(places) * shard_count
            if len(batch_e) >= 20_000:
                flush(conn)
        flush(conn)
    return events_n, deliveries_n


def analyze(engine: sa.Engine) -> None:
    """Statistics for the planner; on PostgreSQL the fold's dead rows reclaimed as well."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("VACUUM ANALYZE event_rollups")
            conn.exec_driver_sql("VACUUM ANALYZE delivery_rollups")
        else:
            conn.exec_driver_sql("ANALYZE")


def chosen(days: int) -> period.Period:
    last = NOW.astimezone(period.zone(ZONE)).date()
    return period.Period(
        last - timedelta(days=days - 1), last, period.zone(ZONE), period.Preset.CUSTOM
    )


def median_ms(run: Callable[[], Any]) -> float:
    runs = []
    for _ in range(3):
        began = time.perf_counter()
        run()
        runs.append(1000 * (time.perf_counter() - began))
    return statistics.median(runs)


def numbers(engine: sa.Engine, hourly_path: bool = False) -> dict[tuple[int, str], Any]:
    """Every report for every range; `hourly_path`: the day reports and the page's reads
    the old way, the others as they are (they never went by hour)."""
    functions = FUNCTIONS | (HOURLY if hourly_path else {})
    found = {
        (days, name): fn(engine, period=chosen(days))
        for days in RANGES
        for name, fn in functions.items()
    }
    page = gather_hourly if hourly_path else gather
    return found | {(days, PAGE_READS): page(engine, chosen(days)) for days in RANGES}


def time_functions(engine: sa.Engine, hourly_path: bool = False) -> dict[tuple[int, str], float]:
    functions = FUNCTIONS | (HOURLY if hourly_path else {})
    page = gather_hourly if hourly_path else gather
    timings = {}
    for days in RANGES:
        span = chosen(days)
        for name, fn in functions.items():
            timings[(days, name)] = median_ms(partial(fn, engine, period=span))
        timings[(days, PAGE_READS)] = median_ms(partial(page, engine, span))
    return timings


def page_paths(days: int) -> dict[str, str]:
    span = chosen(days)
    query = f"range=custom&from={span.first}&to={span.last}&tz={ZONE}"
    return {
        "/admin/reports": f"/admin/reports?{query}",
        "/admin/reports/outcomes.csv": f"/admin/reports/outcomes.csv?{query}",
        "/admin/reports/events.csv": f"/admin/reports/events.csv?{query}",
    }


async def time_pages(db_url: str, work: Path) -> dict[tuple[int, str], float]:
    settings = settings_mod.Settings.model_validate(
        {
            "database_url": db_url,
            "secret_key": "bench-secret-key-0123456789-abcdefghijklmnop",
            "admin_token": TOKEN,
            "cookie": {"domain": "example.test", "secure": False},
            "sources": [
                {"name": "crm", "kind": "server", "write_key": "wk_bench_reports_0123456789"}
            ],
        }
    )
    app = create_app(settings, run_worker=False)
    timings: dict[tuple[int, str], float] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t.example.test") as c:
            form = (await c.get("/admin/login")).text
            csrf = re.search(r'name="csrf" value="([^"]+)"', form)
            assert csrf, "no CSRF field on /admin/login"
            signed = await c.post("/admin/login", data={"csrf": csrf.group(1), "token": TOKEN})
            assert signed.status_code == 303, signed.status_code
            for days in RANGES:
                for label, path in page_paths(days).items():
                    runs = []
                    for _ in range(3):
                        began = time.perf_counter()
                        answer = await c.get(path)
                        runs.append(1000 * (time.perf_counter() - began))
                        if answer.status_code != 200:
                            raise RuntimeError(f"{path} answered {answer.status_code}")
                    timings[(days, label)] = statistics.median(runs)
    return timings


def profile(engine: sa.Engine) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    reports_ui.gather(engine, chosen(90), False)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(18)


def table(
    title: str,
    before: dict[tuple[int, str], float],
    after: dict[tuple[int, str], float],
    old: dict[tuple[int, str], float] | None = None,
) -> bool:
    """Sharded and folded times, beside the hourly path's (folded) where given; verdicts on
    the folded times of the path in use."""
    ok = True
    print(f"\n{title} (median of 3, ms; target <= {TARGET_MS:.0f} ms)")
    head = f"{'hourly path':>12} " if old else ""
    print(f"{'report':34} {'days':>5} {head}{'sharded':>9} {'folded':>9}  verdict")
    for (days, name), ms in after.items():
        passed = ms <= TARGET_MS
        ok &= passed
        was = before[(days, name)]
        then = " " * 13 if old else ""
        if old and (days, name) in old:
            then = f"{old[(days, name)]:12.0f} "
        print(f"{name:34} {days:5d} {then}{was:9.0f} {ms:9.0f}  {'PASS' if passed else 'FAIL'}")
    return ok


def run(engine_kind: str, db_url: str, work: Path, args: argparse.Namespace) -> bool:
    engine = db.create_engine(db_url)
    migrate.upgrade(engine)
    began = time.perf_counter()
    n_events, n_deliveries = fill(engine, days=args.days, keys=args.keys, shard_count=args.shards)
    analyze(engine)
    print(
        f"{engine_kind}: {n_events:,} event_rollups and {n_deliveries:,} delivery_rollups rows"
        f" ({args.keys} keys x {args.shards} shards x {args.days} days of hours), filled in"
        f" {time.perf_counter() - began:.0f} s"
    )
    if args.profile:
        profile(engine)
    expected = numbers(engine)
    same = expected == numbers(engine, hourly_path=True)
    print(f"every report's numbers identical to the hourly path's: {same}")
    f_before = time_functions(engine)
    p_before = asyncio.run(time_pages(db_url, work))
    began = time.perf_counter()
    folded = shards.fold(engine, now=NOW + timedelta(days=1), max_rows=10**9)
    analyze(engine)
    print(f"fold: {folded} in {time.perf_counter() - began:.1f} s")
    kept = numbers(engine) == expected
    print(f"every report's numbers identical after the fold: {kept}")
    if args.profile:
        profile(engine)
    f_old = time_functions(engine, hourly_path=True)
    f_after = time_functions(engine)
    p_after = asyncio.run(time_pages(db_url, work))
    engine.dispose()
    ok = table("report functions (reports.summary)", f_before, f_after, f_old)
    ok &= table("admin pages (through the app)", p_before, p_after)
    return ok and same and kept


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--keys", type=int, default=60)
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile of the 90-day page")
    args = parser.parse_args()
    args.days = max(7, min(args.days, 400))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.engine == "sqlite":
            passed = run("sqlite", f"sqlite:///{work}/reports.db", work, args)
        else:
            db_url, drop = ingest_bench.postgres_url()
            try:
                passed = run("postgresql", db_url, work, args)
            finally:
                drop()
    print(f"\nbench/reports {args.engine}: {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
