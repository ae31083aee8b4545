"""Schemathesis over /openapi.json: every documented operation, positive and negative data,
sent to `firstparty serve` with a write key and the admin token; any 5xx or any answer the
document does not declare (status, content type, body schema) fails the run."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from firstparty.api import openapi
from tests.fuzz.conftest import HEADERS, Server, count

EXAMPLES = 10  # per operation (~60 of them): about 1,300 requests
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def fuzzable(document: dict[str, Any]) -> dict[str, Any]:
    """The document without its event streams: an answer that never ends is not fuzzed."""
    for item in document["paths"].values():
        for method, op in list(item.items()):
            media = {m for answer in op["responses"].values() for m in answer.get("content", {})}
            if "text/event-stream" in media:
                del item[method]
    document["paths"] = {path: item for path, item in document["paths"].items() if item}
    return document


schema = schemathesis.openapi.from_dict(fuzzable(openapi.document()))
schema.config.generation.update(max_examples=EXAMPLES, database="none")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(
    case: schemathesis.Case, fuzz_server: Server
) -> None:
    response = case.call(base_url=fuzz_server.url, headers=HEADERS, timeout=30)
    count("schemathesis", response.status_code)
    assert response.status_code < 500, f"{response.status_code}\n{fuzz_server.crashes()}"
    case.validate_response(response, checks=CHECKS, headers=HEADERS)
