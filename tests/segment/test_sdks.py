"""The real Segment server SDKs against a running firstparty: every event arrives once.

analytics-python (PyPI `segment-analytics-python`) and @segment/analytics-node (npm, run with
the machine's Node.js) send track, page, identify and a batch of 500, once directly and once
through a proxy that loses the first answers, so the SDKs retry batches already stored. Each
event must be stored once and reach the fake destination once.
"""

from __future__ import annotations

import collections
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.segment import stack

EXPECTED = ["track", "page", "identify", *(f"bulk-{i}" for i in range(500))]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.Stack]:
    with stack.running(tmp_path_factory.mktemp("segment-sdks")) as running:
        yield running


def _ids(prefix: str) -> list[str]:
    return sorted(f"{prefix}-{suffix}" for suffix in EXPECTED)


def _arrived_once(server: stack.Stack, prefix: str) -> None:
    stored = [i for i in server.event_ids() if i.startswith(prefix + "-")]
    assert stored == _ids(prefix), f"stored {len(stored)} of {len(EXPECTED)}"
    stack.wait_until(
        lambda: set(_ids(prefix)) <= set(server.receiver.event_ids()),
        f"{prefix} events to reach the fake destination",
    )
    delivered = collections.Counter(i for i in server.receiver.event_ids() if i.startswith(prefix))
    assert set(delivered.values()) == {1}, "an event was delivered twice"


def _python_client(host: str, errors: list[str]) -> Any:
    analytics = pytest.importorskip(
        "segment.analytics", reason="pip install segment-analytics-python"
    )
    return analytics.Client(
        write_key=stack.SERVER_KEY,
        host=host + "/segment",
        gzip=True,
        upload_size=100,
        max_retries=5,
        on_error=lambda error, batch: errors.append(str(error)),
    )


def _send_python(host: str, prefix: str) -> None:
    errors: list[str] = []
    client = _python_client(host, errors)
    anonymous = f"{prefix}-anon"
    client.track(
        anonymous_id=anonymous, event="Lead", properties={"value": 49}, message_id=f"{prefix}-track"
    )
    client.page(
        anonymous_id=anonymous,
        name="Pricing",
        message_id=f"{prefix}-page",
        properties={"url": "https://www.example.test/pricing?gclid=G1"},
    )
    client.identify(
        user_id=f"{prefix}-user",
        traits={"email": "ada@example.test"},
        message_id=f"{prefix}-identify",
    )
    for i in range(500):
        client.track(
            anonymous_id=anonymous,
            event="Bulk",
            properties={"i": i},
            message_id=f"{prefix}-bulk-{i}",
        )
    client.track(anonymous_id=anonymous, event="Lead", message_id=f"{prefix}-track")
    client.shutdown()
    assert errors == [], errors


def test_analytics_python(server: stack.Stack) -> None:
    _send_python(server.url, "py")
    _arrived_once(server, "py")


def test_analytics_python_retries_are_deduplicated(server: stack.Stack) -> None:
    with stack.FlakyProxy(server.url, failures=3) as proxy:
        _send_python(proxy.url, "pyretry")
    assert proxy.failures == 0 and len(proxy.requests) > 3, "the proxy never lost an answer"
    _arrived_once(server, "pyretry")


def _send_node(host: str, prefix: str) -> None:
    stack.node_modules()
    script = Path(stack.NODE_DIR / "send.js")
    done = subprocess.run(
        ["node", str(script), host, stack.SERVER_KEY, prefix],
        cwd=stack.NODE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "segment error" not in done.stderr, done.stderr


def test_analytics_node(server: stack.Stack) -> None:
    _send_node(server.url, "node")
    _arrived_once(server, "node")


def test_analytics_node_retries_are_deduplicated(server: stack.Stack) -> None:
    with stack.FlakyProxy(server.url, failures=3) as proxy:
        _send_node(proxy.url, "noderetry")
    assert proxy.failures == 0 and len(proxy.requests) > 3, "the proxy never lost an answer"
    _arrived_once(server, "noderetry")
