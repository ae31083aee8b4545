"""A fake Meta Graph API serving `POST /{version}/{pixel_id}/events` (destinations.md 1.14, 6).

It accepts the token as a query, JSON-body or form parameter and `data` as a JSON array or a
JSON string (form and multipart bodies), checks every event against the checklist and answers
with Graph's success and error bodies. The bodies of sections 1.9 and 1.13 are Meta's; for the
other checklist refusals the codes are Meta's and the wording of `error_user_msg` is the fake's.

A refusal of one parameter names the event in Graph's own path syntax, `$['data'][2]['...']`,
in `error_user_msg` (section 6). The refusals with Meta's published bodies (timestamp too old,
Purchase without value) name no event, as in the spec's examples, unless `name_event_index` is
set: then they carry `error_data` with an `event_index` (a shape seen in Meta's
offline-conversions errors, unconfirmed for CAPI).

`fbc`/`fbp` must be `fb.<index>.<13-digit ms>.<value>`, optionally with the fifth segment Meta's
Parameter Builder appends (2 or 8 base64url characters); Limited Data Use must be
`data_processing_options: [] | ["LDU"]`, LDU with integer `_country` (0 or 1) and `_state` (the
state may be left out only when the event has an IP address to geolocate).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import time
from collections.abc import Callable, Mapping
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs

from .server import FakeServer, Received, Reply

PIXEL_ID = "123456789012345"
ACCESS_TOKEN = "EAAB-fake-meta-token"
ACTION_SOURCES = {
    "email",
    "website",
    "app",
    "phone_call",
    "chat",
    "physical_store",
    "system_generated",
    "business_messaging",
    "other",
}
EVENT_FIELDS = {
    "event_name",
    "event_time",
    "action_source",
    "user_data",
    "event_source_url",
    "event_id",
    "custom_data",
    "opt_out",
    "referrer_url",
    "data_processing_options",
    "data_processing_options_country",
    "data_processing_options_state",
    "app_data",
    "original_event_data",
    "attribution_data",
    "messaging_channel",
    "customer_segmentation",
}
HASHED = {"em", "ph", "fn", "ln", "db", "ge", "ct", "st", "zp", "country", "external_id"}
PLAIN = {
    "client_ip_address",
    "client_user_agent",
    "fbc",
    "fbp",
    "subscription_id",
    "fb_login_id",
    "lead_id",
    "anon_id",
    "madid",
    "page_id",
    "page_scoped_user_id",
    "ctwa_clid",
    "ig_account_id",
    "ig_sid",
}
BASELINE_INVALID = (
    {"ct", "country", "st", "zp", "ge", "client_user_agent"},
    {"db", "client_user_agent"},
    {"fn", "ge"},
    {"ln", "ge"},
)
SHA256 = re.compile(r"^[a-f0-9]{64}$")
# fb.{subdomain index}.{ms}.{value}, maybe followed by a Parameter Builder appendix
# (facebook/capi-param-builder: 2-character legacy language token or 8 base64url characters).
COOKIE = re.compile(r"^fb\.\d\.\d{13}\.[A-Za-z0-9_\-]+(\.([A-Za-z0-9_\-]{2}|[A-Za-z0-9_\-]{8}))?$")
DAY = 86_400
# The Dataset Quality API: the query parameters it takes, and the match keys it reports on
# (user_data key -> Meta's identifier name in match_key_feedback).
QUALITY_PARAMS = {"dataset_id", "fields", "access_token", "agent_name", "appsecret_proof"}
MATCH_KEYS = {
    "em": "email",
    "ph": "phone",
    "external_id": "external_id",
    "fbc": "fbc",
    "fbp": "fbp",
    "client_ip_address": "ip_address",
    "client_user_agent": "user_agent",
}


class MetaError(Exception):
    """A Graph error to answer with; `index` is the event at fault, when there is one."""

    def __init__(
        self,
        code: int,
        message: str = "Invalid parameter",
        *,
        subcode: int | None = None,
        title: str | None = None,
        user_msg: str | None = None,
        index: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.subcode = code, message, subcode
        self.title, self.user_msg, self.index = title, user_msg, index


class FakeMeta(FakeServer):
    """Meta's CAPI endpoint for one pixel and one token."""

    def __init__(
        self,
        *,
        pixel_id: str = PIXEL_ID,
        access_token: str = ACCESS_TOKEN,
        app_secret: str | None = None,
        now: Callable[[], float] = time.time,
        name_event_index: bool = False,
    ) -> None:
        super().__init__()
        self.pixel_id, self.access_token, self.app_secret = pixel_id, access_token, app_secret
        self.now = now
        self.name_event_index = name_event_index
        self.events: list[dict[str, Any]] = []  # every event accepted, in order
        self.test_event_codes: list[str | None] = []  # per accepted request
        self._trace = (f"AfakeTrace{n:06d}" for n in itertools.count())
        self.emq: dict[str, float] = {}  # event name -> the composite score to report
        self.quality_calls = 0

    @property
    def api_base(self) -> str:
        return self.url + "/v25.0"

    def handle(self, request: Received) -> Reply:
        if re.fullmatch(r"/v\d+\.\d+/dataset_quality", request.path):
            try:
                return Reply(200, self._dataset_quality(request))
            except MetaError as error:
                return Reply(400, self.error_body(error))
        try:
            params = self._accept(request)
        except MetaError as error:
            return Reply(400, self.error_body(error))
        self.events.extend(params["data"])
        self.test_event_codes.append(params.get("test_event_code"))
        body = {"events_received": len(params["data"]), "messages": [], "fbtrace_id": ""}
        body["fbtrace_id"] = next(self._trace)
        return Reply(200, body)

    def error_body(self, error: MetaError) -> dict[str, Any]:
        """Graph's error object (section 1.9)."""
        out: dict[str, Any] = {"message": error.message, "type": "OAuthException"}
        out["code"] = error.code
        if error.subcode is not None:
            out["error_subcode"] = error.subcode
        out["is_transient"] = False
        if error.title:
            out["error_user_title"] = error.title
        if error.user_msg:
            out["error_user_msg"] = error.user_msg
        if error.index is not None and self.name_event_index:
            out["error_data"] = json.dumps({"event_index": error.index})
        out["fbtrace_id"] = next(self._trace)
        return {"error": out}

    # ------------------------------------------------------------ failures to script

    def transient(self) -> Reply:
        """Graph's answer when Meta has a temporary problem (code 2, HTTP 500)."""
        error = {
            "message": "An unexpected error has occurred. Please retry your request later.",
            "type": "OAuthException",
            "is_transient": True,
            "code": 2,
            "fbtrace_id": next(self._trace),
        }
        return Reply(500, {"error": error})

    def throttled(self, retry_after: int | None = None) -> Reply:
        """Graph's application request limit (code 4), HTTP 400 as Graph sends it."""
        error = {
            "message": "(#4) Application request limit reached",
            "type": "OAuthException",
            "is_transient": True,
            "code": 4,
            "fbtrace_id": next(self._trace),
        }
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        return Reply(400, {"error": error}, headers)

    # ------------------------------------------------------------ Dataset Quality API

    def _dataset_quality(self, request: Received) -> dict[str, Any]:
        """`GET /{version}/dataset_quality?dataset_id=…&fields=web{…}&access_token=…`: per event
        name received, the composite score (set in `emq`, else from the match keys' coverage)
        and the coverage of each match key, in the shape of Meta's reference."""
        if request.method != "GET":
            raise MetaError(100, "Unsupported post request.")
        unknown = set(request.query) - QUALITY_PARAMS
        if unknown:
            raise MetaError(100, f"(#100) Unknown parameter(s): {', '.join(sorted(unknown))}")
        params = {k: v[-1] for k, v in request.query.items()}
        self._authenticate(params)
        if not params.get("dataset_id"):
            raise MetaError(100, "(#100) The parameter dataset_id is required")
        if params["dataset_id"] != self.pixel_id:
            raise MetaError(
                100, f"Object with ID '{params['dataset_id']}' does not exist", subcode=33
            )
        fields = params.get("fields", "")
        if not (fields.startswith("web{") and "event_match_quality" in fields):
            raise MetaError(100, "(#100) fields must ask for web{event_match_quality,...}")
        self.quality_calls += 1
        web = []
        for name in sorted({str(e.get("event_name")) for e in self.events}):
            got = [e.get("user_data") or {} for e in self.events if e.get("event_name") == name]
            coverage = {
                label: 100 * sum(1 for u in got if key in u) / len(got)
                for key, label in MATCH_KEYS.items()
            }
            score = self.emq.get(name, round(1 + 9 * sum(coverage.values()) / 700, 1))
            feedback = [
                {"identifier": label, "coverage": {"percentage": round(share, 1)}}
                for label, share in coverage.items()
                if share
            ]
            quality = {"composite_score": score, "match_key_feedback": feedback}
            web.append({"event_match_quality": quality, "event_name": name})
        return {"web": web}

    # ------------------------------------------------------------ the checklist

    def _accept(self, request: Received) -> dict[str, Any]:
        match = re.fullmatch(r"/v\d+\.\d+/([^/]+)/events", request.path)
        if request.method != "POST" or match is None:
            raise MetaError(2500, f"Unknown path components: {request.path}")
        params = _params(request)
        self._authenticate(params)
        if match.group(1) != self.pixel_id:
            raise MetaError(
                100,
                f"Unsupported post request. Object with ID '{match.group(1)}' does not exist, "
                "cannot be loaded due to missing permissions, or does not support this "
                "operation. Please read the Graph API documentation at "
                "https://developers.facebook.com/docs/graph-api",
                subcode=33,
            )
        data = params.get("data")
        if not isinstance(data, list) or not 1 <= len(data) <= 1000:
            raise MetaError(100, user_msg="data must be an array of 1 to 1,000 events")
        for index, event in enumerate(data):
            self._check_event(index, event)
        return params

    def _authenticate(self, params: Mapping[str, Any]) -> None:
        token = params.get("access_token")
        if token != self.access_token:
            raise MetaError(190, "Invalid OAuth access token - Cannot parse access token")
        if self.app_secret is not None:
            proof = hmac.new(self.app_secret.encode(), token.encode(), hashlib.sha256)
            if params.get("appsecret_proof") != proof.hexdigest():
                raise MetaError(100, "Invalid appsecret_proof provided in the API argument")

    def _check_event(self, index: int, event: Any) -> None:
        def refuse(what: str) -> MetaError:
            path = f"$['data'][{index}]"
            user_msg = f"Invalid parameter {path}: {what}"
            return MetaError(100, title="Invalid parameter", user_msg=user_msg, index=index)

        if not isinstance(event, dict):
            raise refuse("each event must be an object")
        unknown = set(event) - EVENT_FIELDS
        if unknown:
            raise refuse(f"unknown event parameters: {sorted(unknown)}")
        if not isinstance(event.get("event_name"), str) or not event["event_name"]:
            raise refuse("event_name is required")
        event_time = event.get("event_time")
        if not isinstance(event_time, int) or isinstance(event_time, bool):
            raise refuse("event_time must be an integer (Unix seconds)")
        source = event.get("action_source")
        if source not in ACTION_SOURCES:
            raise refuse(f"action_source must be one of {sorted(ACTION_SOURCES)}")
        days = 62 if source == "physical_store" else 7
        if self.now() - event_time > days * DAY:
            raise MetaError(
                100,
                subcode=2804003,
                title="Event Timestamp Too Old",
                user_msg="The timestamp for this event is too far in the past. Events need to "
                f"be sent from your server within {days} days of when they occurred.",
                index=index,
            )
        user_data = event.get("user_data")
        if not isinstance(user_data, dict):
            raise refuse("user_data is required")
        self._check_user_data(user_data, refuse)
        url = event.get("event_source_url")
        if url is not None and not (
            isinstance(url, str) and url.lower().startswith(("http://", "https://"))
        ):
            raise refuse("event_source_url must begin with http:// or https://")
        if source == "website":
            if not isinstance(url, str):
                raise refuse("website events need event_source_url")
            if "client_user_agent" not in user_data:
                raise refuse("website events need user_data.client_user_agent")
        custom = event.get("custom_data", {})
        if not isinstance(custom, dict):
            raise refuse("custom_data must be an object")
        value = custom.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise refuse("custom_data.value must be a number")
        for j, item in enumerate(custom.get("contents") or []):
            if not isinstance(item, dict) or "id" not in item or "quantity" not in item:
                raise refuse(f"custom_data.contents[{j}] needs id and quantity")
        if event["event_name"] == "Purchase" and custom.get("value") is None:
            raise MetaError(
                100,
                subcode=2804009,
                title="Missing Value for Purchase Event",
                user_msg="Your purchase event doesn't include a value parameter. Enter a value, "
                "for example 1.99.",
                index=index,
            )
        if event["event_name"] == "Purchase" and not custom.get("currency"):
            raise refuse("Purchase events need custom_data.currency")
        self._check_ldu(event, user_data, refuse)

    def _check_ldu(
        self, event: dict[str, Any], user_data: dict[str, Any], refuse: Callable[[str], Any]
    ) -> None:
        options = event.get("data_processing_options")
        country = event.get("data_processing_options_country")
        state = event.get("data_processing_options_state")
        if options is None:
            if country is not None or state is not None:
                raise refuse("data_processing_options_country/_state need data_processing_options")
            return
        if not isinstance(options, list) or any(o != "LDU" for o in options):
            raise refuse('data_processing_options must be [] or ["LDU"]')
        if not options:
            return
        if country not in (0, 1) or isinstance(country, bool):
            raise refuse("data_processing_options_country must be 0 (geolocate) or 1 (USA)")
        if state is None and "client_ip_address" not in user_data:
            raise refuse("data_processing_options_state is required without client_ip_address")
        if state is not None and (not isinstance(state, int) or isinstance(state, bool)):
            raise refuse("data_processing_options_state must be an integer, e.g. 1000")

    def _check_user_data(self, user_data: dict[str, Any], refuse: Callable[[str], Any]) -> None:
        for key, value in user_data.items():
            if key in HASHED:
                values = value if isinstance(value, list) else [value]
                if not values or not all(isinstance(v, str) and SHA256.match(v) for v in values):
                    raise refuse(f"user_data.{key} must be SHA-256 hashed (64 lowercase hex)")
            elif key in PLAIN:
                if not isinstance(value, str) or not value:
                    raise refuse(f"user_data.{key} must be a non-empty string")
            else:
                raise refuse(f"unknown user_data parameter {key}")
        for key in ("fbc", "fbp"):
            if key in user_data and not COOKIE.match(user_data[key]):
                raise refuse(f"user_data.{key} is not fb.<index>.<ms>.<value>")
        keys = set(user_data)
        if not keys or any(keys <= invalid for invalid in BASELINE_INVALID):
            raise refuse("user_data does not contain enough customer information to match")


def _params(request: Received) -> dict[str, Any]:
    """Graph parameters from the query and the JSON, form or multipart body."""
    params: dict[str, Any] = {k: v[-1] for k, v in request.query.items()}
    kind = request.headers.get("content-type", "")
    try:
        if kind.startswith("application/json"):
            params.update(json.loads(request.body))
        elif kind.startswith("application/x-www-form-urlencoded"):
            form = parse_qs(request.body.decode(), keep_blank_values=True)
            params.update({k: v[-1] for k, v in form.items()})
        elif kind.startswith("multipart/form-data"):
            head = f"Content-Type: {kind}\r\n\r\n".encode()
            message = BytesParser(policy=HTTP).parsebytes(head + request.body)
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                params[str(name)] = part.get_payload(decode=True).decode()  # type: ignore[union-attr]
        if isinstance(params.get("data"), str):
            params["data"] = json.loads(params["data"])
    except (ValueError, UnicodeDecodeError):
        raise MetaError(100, user_msg="the request body could not be parsed") from None
    return params
