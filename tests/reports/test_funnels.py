"""Funnels: the step grammar and its messages, the config file's [[funnels]] validated, and
funnels computed through the real app on SQLite and PostgreSQL from events sent to /v1/events
(steps in order, property filters, the window, the channel breakdown, the median time), saved
and deleted from the UI with CSRF, and bad input answered 4xx without a change."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest

from firstparty.reports import funnel_rounds, funnel_spec, funnel_store, funnels
from firstparty.store.models import funnel_results, funnel_schedule
from firstparty.store.models import funnels as funnels_table
from tests import factories
from tests.conftest import (
    BROWSER_KEY,
    BROWSER_UA,
    SERVER_KEY,
    AppClient,
    make_database,
    running_app,
    settings_for,
)
from tests.web.test_admin_ui import csrf_in, signed_in_page

SITE = "https://www.example.test"
CHECKOUT = {
    "name": "checkout",
    "steps": ["page /pricing", "event AddToCart", "event Purchase where value >= 100"],
    "window_hours": 1,
}

# ---------------------------------------------------------------- the grammar


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("page /pricing", "page /pricing"),
        ("  page   /blog/*  ", "page /blog/*"),
        ("event Purchase", "event Purchase"),
        ("event Purchase where value >= 100", "event Purchase where value >= 100"),
        (
            'event Signup where plan == "pro" and seats > 2',
            'event Signup where plan == "pro" and seats > 2',
        ),
        ('event Search where query contains "shoe"', 'event Search where query contains "shoe"'),
        ("event Lead where consent == true", "event Lead where consent == true"),
    ],
)
def test_steps_parse_and_print_back(text: str, shown: str) -> None:
    assert str(funnel_spec.parse_step(text)) == shown


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("click /pricing", "starts with `page` or `event`"),
        ("page pricing", "names a path"),
        ("event", "names an event"),
        ("event Purchase where value => 100", "property op value"),
        ("event Purchase where plan == pro", "property op value"),
        ("event Search where query contains 3", "contains takes"),
    ],
)
def test_bad_steps_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("(", r"\(")):
        funnel_spec.parse_step(text)


@pytest.mark.parametrize(
    ("step", "props", "holds"),
    [
        ("event P where value >= 100", {"value": 100}, True),
        ("event P where value >= 100", {"value": "149.90"}, True),  # a numeric string counts
        ("event P where value >= 100", {"value": 99.99}, False),
        ("event P where value >= 100", {}, False),
        ("event P where value >= 100", {"value": "lots"}, False),
        ('event P where plan == "pro"', {"plan": "pro"}, True),
        ('event P where plan == "pro"', {"plan": "Pro"}, False),
        ('event P where plan != "pro"', {"plan": "team"}, True),
        ('event P where order.coupon == "X1"', {"order": {"coupon": "X1"}}, True),
        ("event P where trial == true", {"trial": True}, True),
        ("event P where trial == true", {"trial": 1}, False),
    ],
)
def test_filters(step: str, props: dict[str, Any], holds: bool) -> None:
    parsed = funnel_spec.parse_step(step)
    assert parsed.matches(type_="track", name="P", path=None, props=props) is holds


def test_page_steps_match_the_path() -> None:
    exact, prefix = funnel_spec.parse_step("page /pricing"), funnel_spec.parse_step("page /blog/*")
    assert exact.matches(type_="page", name="page", path="/pricing/", props={})
    assert not exact.matches(type_="page", name="page", path="/pricing/team", props={})
    assert not exact.matches(type_="track", name="page", path="/pricing", props={})
    assert prefix.matches(type_="page", name="page", path="/blog/a-post", props={})


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"name": "x", "steps": ["page /a"]}, "between 2 and 10 steps"),
        ({"name": "x", "steps": ["page /a", "event B"], "window_hours": 0}, "window_hours"),
        ({"name": "bad name", "steps": ["page /a", "event B"]}, "funnel name"),
        ({"name": "x", "steps": ["page /a", "event B where v = 1"]}, "funnel 'x', step 2"),
    ],
)
def test_the_config_file_funnels_are_validated_with_clear_messages(
    entry: dict[str, Any], says: str, sqlite_url: str
) -> None:
    with pytest.raises(pydantic.ValidationError, match=says):
        settings_for(sqlite_url, funnels=[entry])
    with pytest.raises(pydantic.ValidationError, match="unique"):
        settings_for(sqlite_url, funnels=[CHECKOUT, CHECKOUT])


# ---------------------------------------------------------------- through the app


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from make_database(str(request.param), tmp_path, migrated=True)


@pytest.fixture
async def shop(url: str) -> AsyncIterator[AppClient]:
    settings = settings_for(
        url, funnels=[CHECKOUT], destinations=[factories.META_CAPI | {"dry_run": True}]
    )
    async with running_app(settings) as app:
        yield app


def device(app: AppClient, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app.app, client=(ip, 50000))
    headers = {"User-Agent": BROWSER_UA, "X-Write-Key": BROWSER_KEY, "Origin": SITE}
    return httpx.AsyncClient(
        transport=transport, base_url="https://t.example.test", headers=headers
    )


async def send(client: httpx.AsyncClient, event: dict[str, Any]) -> None:
    answer = await client.post("/v1/events", json=event)
    assert answer.status_code == 202, answer.text


def page(path: str, **fields: Any) -> dict[str, Any]:
    return {"type": "page", "url": f"{SITE}{path}"} | fields


def track(name: str, value: float | None = None, **fields: Any) -> dict[str, Any]:
    props = {"value": value, "currency": "USD"} if value is not None else {}
    return {"type": "track", "name": name, "url": f"{SITE}/shop", "properties": props} | fields


async def journeys(app: AppClient) -> None:
    """A: all three steps (Google Ads); B: purchase under 100 (email); C: pricing only;
    D: no pricing page; E: the cart 2 h after pricing (window 1 h); F: all three, 10 min apart."""
    a, b, c, d = (device(app, f"198.51.100.{n}") for n in (1, 2, 3, 4))
    for event in (page("/pricing?gclid=G-a"), track("AddToCart"), track("Purchase", 150)):
        await send(a, event)
    for event in (
        page("/pricing?utm_source=news&utm_medium=email"),
        track("AddToCart"),
        track("Purchase", 50),
    ):
        await send(b, event)
    await send(c, page("/pricing"))
    await send(d, track("AddToCart"))
    await send(d, track("Purchase", 500))
    server = device(app, "198.51.100.50")
    server.headers["X-Write-Key"] = SERVER_KEY
    now = datetime.now(UTC).replace(microsecond=0)
    for user, events in (
        (
            "crm-e",
            [(page("/pricing"), 180), (track("AddToCart"), 60), (track("Purchase", 200), 30)],
        ),
        (
            "crm-f",
            [(page("/pricing"), 180), (track("AddToCart"), 170), (track("Purchase", 100), 160)],
        ),
    ):
        for event, minutes_ago in events:
            at = (now - timedelta(minutes=minutes_ago)).isoformat()
            await send(server, event | {"user_id": user, "timestamp": at})
    for client in (a, b, c, d, server):
        await client.aclose()


def period() -> Any:
    from firstparty.reports import period as period_mod

    return period_mod.parse({"range": "7d"}, default_zone="UTC", now=datetime.now(UTC))


async def test_steps_in_order_filters_window_channels_and_median(shop: AppClient) -> None:
    await journeys(shop)
    [checkout] = funnels.all_funnels(shop.settings, shop.engine)
    result = funnels.compute(shop.engine, funnel=checkout, period=period())
    assert [s.people for s in result.steps] == [5, 3, 2]
    assert [s.from_previous for s in result.steps] == [None, 3 / 5, 2 / 3]
    assert result.steps[2].from_first == 2 / 5
    channels = dict(result.by_channel)
    assert channels == {
        "paid_search": [1, 1, 1],
        "email": [1, 1, 0],
        "direct": [1, 0, 0],
        "unknown": [2, 1, 1],  # server events naming a user: no browser, no touch
    }
    # To the cart: A and B within seconds, F 10 minutes on: the median is seconds. To the
    # purchase: A within seconds, F 10 minutes on: the median is half-way, about 5 minutes.
    cart, purchase = result.steps[1].median_seconds, result.steps[2].median_seconds
    assert cart is not None and cart < 60
    assert purchase is not None and 270 < purchase < 330
    assert not result.capped and result.rows_read >= 13
    # The page's bound: past `max_rows` step events the funnel counts the first ones, and says so.
    first = funnels.compute(shop.engine, funnel=checkout, period=period(), max_rows=3)
    assert first.capped and first.rows_read == 3 and first.steps[0].people <= 3

    nobody = funnels.compute(
        shop.engine,
        funnel=checkout,
        period=period().__class__(
            period().first - timedelta(days=30), period().first - timedelta(days=20), period().zone
        ),
    )
    assert [s.people for s in nobody.steps] == [0, 0, 0]


async def test_save_show_download_and_delete_from_the_ui(shop: AppClient) -> None:
    await journeys(shop)
    admin = device(shop, "198.51.100.99")
    listing = await signed_in_page(admin, "/admin/reports/funnels")
    assert "checkout" in listing and "config file" in listing
    assert "not computed yet" in listing
    token = csrf_in(listing)
    steps = "page /pricing\nevent AddToCart\n"
    saved = await admin.post(
        "/admin/reports/funnels",
        data={"csrf": token, "name": "cart", "window_hours": "1", "steps": steps},
    )
    assert saved.status_code == 303 and saved.headers["location"] == "/admin/reports/funnels/cart"
    pending = await signed_in_page(admin, "/admin/reports/funnels/cart?range=7d")
    assert 'id="pending"' in pending and "Not computed yet" in pending and "60.0 %" not in pending
    assert (await admin.get("/admin/reports/funnels/cart?range=7d&format=csv")).status_code == 409
    await funnel_rounds.Refresher(settings=shop.settings, engine=shop.engine).round()
    shown = await signed_in_page(admin, "/admin/reports/funnels/cart?range=7d")
    assert 'id="steps"' in shown and "event AddToCart" in shown and "60.0 %" in shown
    assert 'id="computed"' in shown and "Computed just now" in shown
    listing = await signed_in_page(admin, "/admin/reports/funnels?range=7d")
    assert listing.count("computed just now") == 2 and "not computed yet" not in listing
    custom = await signed_in_page(
        admin, "/admin/reports/funnels?range=custom&from=2026-11-01&to=2026-11-02"
    )
    assert custom.count("counted on the page") == 2

    csv = await admin.get("/admin/reports/funnels/checkout?range=7d&format=csv")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    rows = csv.text.splitlines()
    assert rows[0].startswith("step,definition,people,from_previous")
    assert rows[3].startswith("3,event Purchase where value >= 100,2,0.6667,0.4000")

    refused = [
        ({"csrf": "forged", "name": "x", "steps": steps}, 403),
        ({"csrf": token, "name": "bad name", "steps": steps}, 400),
        ({"csrf": token, "name": "x", "steps": "page /a"}, 400),
        ({"csrf": token, "name": "x", "steps": "event A where v => 1\nevent B"}, 400),
        ({"csrf": token, "name": "x", "window_hours": "soon", "steps": steps}, 400),
        ({"csrf": token, "name": "checkout", "steps": steps}, 409),
        ({"csrf": token, "name": "cart", "steps": steps}, 409),
    ]
    for form, status in refused:
        answer = await admin.post("/admin/reports/funnels", data=form)
        assert answer.status_code == status, (form, answer.status_code)
    assert [r["name"] for r in shop.rows(funnels_table)] == ["cart"]
    bad = await admin.post(
        "/admin/reports/funnels", data={"csrf": token, "name": "x", "steps": "page /a"}
    )
    assert "between 2 and 10 steps" in bad.text and 'value="x"' in bad.text  # the form kept

    for path, status in (
        ("/admin/reports/funnels/nope", 404),
        ("/admin/reports/funnels/checkout?format=pdf", 400),
        ("/admin/reports/funnels/checkout?range=custom&from=2026-02-30&to=2026-03-01", 400),
    ):
        assert (await admin.get(path)).status_code == status, path
    config = await admin.post("/admin/reports/funnels/checkout/delete", data={"csrf": token})
    assert config.status_code == 400
    gone = await admin.post("/admin/reports/funnels/cart/delete", data={"csrf": token})
    assert gone.status_code == 303 and shop.rows(funnels_table) == []
    assert {r["funnel"] for r in shop.rows(funnel_results)} == {"checkout"}  # cart's went too
    assert {r["funnel"] for r in shop.rows(funnel_schedule)} == {"checkout"}
    await admin.aclose()


# ---------------------------------------------------------------- kept by the background round


async def test_one_pass_counts_every_preset_as_its_own_pass_would(shop: AppClient) -> None:
    await journeys(shop)
    [checkout] = funnels.all_funnels(shop.settings, shop.engine)
    wanted = funnel_rounds.periods(shop.settings, datetime.now(UTC))
    together = funnels.compute_many(shop.engine, funnel=checkout, periods=wanted, max_rows=10**6)
    for one, result in zip(wanted, together, strict=True):
        alone = funnels.compute(shop.engine, funnel=checkout, period=one)
        assert result == alone, one.preset
    assert [s.people for s in together[wanted.index(period())].steps] == [5, 3, 2]
    # Cut short, every period not read to its end says so.
    cut = funnels.compute_many(shop.engine, funnel=checkout, periods=wanted, max_rows=3)
    assert all(r.capped for r in cut if r.rows_read)


async def test_the_round_keeps_each_preset_and_the_page_reads_it(shop: AppClient) -> None:
    await journeys(shop)
    clock = Clock(datetime.now(UTC))
    rounds = funnel_rounds.Refresher(settings=shop.settings, engine=shop.engine, clock=clock)
    other = funnel_rounds.Refresher(settings=shop.settings, engine=shop.engine, clock=clock)
    [done] = await rounds.round()
    assert done.funnel == "checkout" and done.rows_read >= 13 and not done.capped
    kept = shop.rows(funnel_results)
    assert sorted(r["range_key"] for r in kept) == sorted(p.value for p in funnel_rounds.PRESETS)
    assert {r["zone"] for r in kept} == {"UTC"} and not any(r["capped"] for r in kept)
    assert await other.round() == []  # not due again: nothing computed twice
    [schedule] = shop.rows(funnel_schedule)
    assert schedule["next_run_at"] == clock.now + timedelta(minutes=60) and schedule["holder"] == ""

    admin = device(shop, "198.51.100.99")
    page_7d = await signed_in_page(admin, "/admin/reports/funnels/checkout?range=7d")
    assert 'id="computed"' in page_7d and "Recompute now" in page_7d
    assert page_7d.count('<td class="num">5</td>') >= 1 and "40.0 %" in page_7d
    csv = await admin.get("/admin/reports/funnels/checkout?range=7d&format=csv")
    assert csv.text.splitlines()[3].startswith("3,event Purchase where value >= 100,2,0.6667")
    # A custom range is counted on the page, on at most MAX_ROWS events, and says so.
    today = datetime.now(UTC).date().isoformat()
    custom = await signed_in_page(
        admin, f"/admin/reports/funnels/checkout?range=custom&from={today}&to={today}"
    )
    assert 'id="on-page"' in custom and "10,000" in custom and 'id="computed"' not in custom

    # Recompute now (operators, CSRF): the funnel is due, and the next round computes it.
    token = csrf_in(page_7d)
    form = {"csrf": token, "range": "7d", "tz": "UTC"}
    asked = await admin.post("/admin/reports/funnels/checkout/recompute", data=form)
    assert asked.status_code == 303
    assert asked.headers["location"] == "/admin/reports/funnels/checkout?range=7d&tz=UTC"
    refused = await admin.post(
        "/admin/reports/funnels/checkout/recompute", data=form | {"csrf": "x"}
    )
    assert refused.status_code == 403
    clock.now += timedelta(minutes=1)
    [again] = await other.round()
    assert again.funnel == "checkout"
    assert {r["computed_at"] for r in shop.rows(funnel_results)} == {clock.now}
    await admin.aclose()


async def test_a_changed_definition_never_shows_the_old_counts(shop: AppClient, url: str) -> None:
    await journeys(shop)
    await funnel_rounds.Refresher(settings=shop.settings, engine=shop.engine).round()
    [checkout] = funnels.all_funnels(shop.settings, shop.engine)
    assert funnel_store.stored(shop.engine, funnel=checkout, period=period()) is not None
    # The config file now asks for a wider window: the kept counts were for another definition.
    wider = settings_for(
        url,
        funnels=[CHECKOUT | {"window_hours": 24}],
        destinations=[factories.META_CAPI | {"dry_run": True}],
    )
    [changed] = funnels.all_funnels(wider, shop.engine)
    assert funnel_store.definition(changed) != funnel_store.definition(checkout)
    assert funnel_store.stored(shop.engine, funnel=changed, period=period()) is None
    view = funnel_rounds.view(
        settings=wider, engine=shop.engine, funnel=changed, period=period(), now=datetime.now(UTC)
    )
    assert view.freshness is funnel_rounds.Freshness.PENDING and view.result is None
    # Due at once (not at the schedule's next hour): the round computes the new definition,
    # whose window now lets E reach the cart, and drops the old definition's rows.
    [done] = await funnel_rounds.Refresher(settings=wider, engine=shop.engine).round()
    assert done.funnel == "checkout"
    kept = funnel_store.stored(shop.engine, funnel=changed, period=period())
    assert kept is not None and [s.people for s in kept.result.steps] == [5, 4, 3]
    assert {r["definition"] for r in shop.rows(funnel_results)} == {
        funnel_store.definition(changed)
    }


async def test_a_funnel_no_longer_defined_leaves_no_schedule_behind(shop: AppClient) -> None:
    """Its schedule row goes once its next run is KEEP_DAYS behind (its results, as before)."""
    now = datetime.now(UTC)
    old = now - timedelta(days=funnel_store.KEEP_DAYS, minutes=1)
    for name, at in (("gone", old), ("recent", now - timedelta(days=1))):
        assert funnel_store.take(shop.engine, name=name, holder="x", now=at, seen=None)
        funnel_store.release(shop.engine, name=name, holder="x", next_run_at=at)
    await journeys(shop)
    [done] = await funnel_rounds.Refresher(settings=shop.settings, engine=shop.engine).round()
    assert done.funnel == "checkout"
    assert {r["funnel"] for r in shop.rows(funnel_schedule)} == {"checkout", "recent"}


async def test_a_held_funnel_is_left_to_its_holder(shop: AppClient) -> None:
    now = datetime.now(UTC)
    assert funnel_store.take(shop.engine, name="checkout", holder="a", now=now, seen=None)
    assert await funnel_rounds.Refresher(settings=shop.settings, engine=shop.engine).round() == []
    assert not funnel_store.take(shop.engine, name="checkout", holder="b", now=now, seen=now)
    funnel_store.release(shop.engine, name="checkout", holder="a", next_run_at=now)
    assert funnel_store.take(shop.engine, name="checkout", holder="b", now=now, seen=now)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now
