"""Google Customer Match through the Data Manager API: `POST {api_base}/audienceMembers:ingest`
adds members to a user list, `audienceMembers:remove` takes them out (audiences.md, Google).

Each request names one destination (the Google Ads account and the user list id as its
`productDestinationId`) and carries at most 10,000 members of at most 10 identifiers each. A
member's identifiers are hashes firstparty already stores, sent hex-encoded (`encoding: HEX`):
the email with Google's gmail rule (`em_google`, else `em`), the phone in E.164 with "+"
(`ph_e164`) and, when all four are known, the address (hashed `fn`, `ln`; `country_code` and
`postal_code` in clear, as Google requires). Ingest states each member's consent
(`adUserData`, `adPersonalization`) and the Customer Match terms of service, which Google
requires accepted for every upload to a Customer Match list; remove takes neither.

Google answers with a `requestId` and processes later; `follow_up` builds the
`requestStatus:retrieve` request and `interpret_follow_up` reads Google's final word per member,
as the `google_ads` conversion adapter does. OAuth2 (refresh token or service account) as there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence, Set
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator

from firstparty.audiences import base
from firstparty.destinations import base as destinations
from firstparty.destinations import google_ads, google_rpc
from firstparty.settings import UNSET_SECRET

DATA_MANAGER_BASE = "https://datamanager.googleapis.com/v1"
SCOPE = "https://www.googleapis.com/auth/datamanager"
MAX_IDENTIFIERS = 10  # per member
INDEX = re.compile(r"audience_?[mM]embers\[(\d+)\]")
# Customer Match's upload file (Google Ads Help 7659867): hashed email, phone, names; country
# and zip in clear.
FILE_HEADERS = ["Email", "Phone", "First Name", "Last Name", "Country", "Zip"]


class GoogleCustomerMatchSettings(destinations.DestinationSettings):
    """A Customer Match user list of a Google Ads account, reached through Data Manager."""

    type: Literal["google_customer_match"] = "google_customer_match"
    customer_id: str  # the Google Ads account that owns the user list
    login_customer_id: str | None = None  # the manager account, when access goes through one
    user_list_id: str = Field(pattern=r"^\d{1,20}$")
    oauth: SecretStr  # JSON credentials, normally "env:GOOGLE_OAUTH_JSON" (see google_ads)
    token_url: str = "https://oauth2.googleapis.com/token"
    quota_project: str | None = None  # sent as x-goog-user-project
    validate_only: bool = False
    # Google refuses Customer Match uploads unless the caller accepts its terms of service
    # (support.google.com/adspolicy/answer/6299717): the operator says so here.
    accept_customer_match_terms: bool = False
    # Ask requestStatus:retrieve this long after Google accepted a request, up to the deadline.
    request_status_delay_seconds: float = Field(default=1800, ge=0)
    request_status_deadline_seconds: float = Field(default=25 * 3600, gt=0)

    @field_validator("customer_id", "login_customer_id")
    @classmethod
    def _account_id(cls, value: str | None) -> str | None:
        return google_ads.account_id(value)

    @field_validator("oauth")
    @classmethod
    def _oauth_json(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() != UNSET_SECRET:  # unset: reported, never sent (settings)
            google_ads.credentials(value)
        return value

    @property
    def base_url(self) -> str:
        return (self.api_base or DATA_MANAGER_BASE).rstrip("/")


class GoogleCustomerMatch(base.AudienceAdapter):
    """Adds and removes the members of one Customer Match user list."""

    type = "google_customer_match"
    settings_model = GoogleCustomerMatchSettings
    settings: GoogleCustomerMatchSettings
    max_members = 10_000
    min_members = 100
    identifier_keys = ("em_google", "em", "ph_e164")
    example_settings: ClassVar[Mapping[str, Any]] = {
        "name": "google_buyers",
        "type": "google_customer_match",
        "customer_id": "1234567890",
        "user_list_id": "9876543210",
        "accept_customer_match_terms": True,
        # normally "env:GOOGLE_OAUTH_JSON"; written out here so that the entry validates
        "oauth": '{"client_id": "1234.apps.googleusercontent.com", "client_secret": "GOCSPX-x", '
        '"refresh_token": "1//0example"}',
    }

    # ------------------------------------------------------------ sign-in (as google_ads)

    @property
    def needs_token(self) -> bool:
        return True

    def token_request(self) -> destinations.OutgoingRequest:
        return self._signer().token_request()

    def read_token(self, response: destinations.Response) -> tuple[str, float]:
        return self._signer().read_token(response)

    def _signer(self) -> google_ads.GoogleAds:
        """The conversion adapter's OAuth2 flow with the same credentials and Data Manager scope."""
        settings = google_ads.GoogleAdsSettings(
            name=self.settings.name,
            customer_id=self.settings.customer_id,
            conversion_actions={"audience": self.settings.user_list_id},
            oauth=self.settings.oauth,
            token_url=self.settings.token_url,
        )
        return google_ads.GoogleAds(settings)

    # ------------------------------------------------------------ building

    def build(
        self, change: base.Change, members: Sequence[base.Member], token: str | None = None
    ) -> list[destinations.OutgoingRequest]:
        usable = [m for m in members if self.usable(m)]
        size = min(self.settings.batch_size or self.max_members, self.max_members)
        return [
            self._request(change, usable[i : i + size], token) for i in range(0, len(usable), size)
        ]

    def member(self, member: base.Member, *, consent: bool) -> dict[str, Any]:
        """One AudienceMember: its identifiers and, when adding, its consent."""
        out: dict[str, Any] = {"userData": {"userIdentifiers": identifiers(member)}}
        if consent:
            out["consent"] = {
                "adUserData": _consent(member.ad_user_data),
                "adPersonalization": _consent(member.ad_personalization),
            }
        return out

    def _request(
        self, change: base.Change, members: Sequence[base.Member], token: str | None
    ) -> destinations.OutgoingRequest:
        adding = change is base.Change.ADD
        body: dict[str, Any] = {
            "destinations": [self._destination()],
            "audienceMembers": [self.member(m, consent=adding) for m in members],
            "encoding": "HEX",  # our hashes are lowercase hex digests
        }
        if adding and self.settings.accept_customer_match_terms:
            body["termsOfService"] = {"customerMatchTermsOfServiceStatus": "ACCEPTED"}
        body["validateOnly"] = self.settings.validate_only
        verb = "ingest" if adding else "remove"
        return destinations.OutgoingRequest(
            method="POST",
            url=f"{self.settings.base_url}/audienceMembers:{verb}",
            event_pks=tuple(m.key for m in members),
            headers=self._headers(token),
            json=body,
            secrets=(token,) if token else (),
        )

    def _destination(self) -> dict[str, Any]:
        account = {"accountType": "GOOGLE_ADS", "accountId": self.settings.customer_id}
        destination: dict[str, Any] = {"operatingAccount": account}
        if self.settings.login_customer_id:
            login = {"accountType": "GOOGLE_ADS", "accountId": self.settings.login_customer_id}
            destination["loginAccount"] = login
        destination["productDestinationId"] = self.settings.user_list_id
        return destination

    def _headers(self, token: str | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if self.settings.quota_project:
            headers["x-goog-user-project"] = self.settings.quota_project
        return headers

    # ------------------------------------------------------------ reading answers

    def interpret(
        self, request: destinations.OutgoingRequest, response: destinations.Response
    ) -> dict[str, destinations.Outcome]:
        keys = request.event_pks
        if response.status != 200:
            return _refused(keys, response)
        if self.settings.validate_only:
            test = destinations.Delivered("validateOnly: passed validation, nothing stored", True)
            return dict.fromkeys(keys, test)
        request_id = google_rpc.json_body(response).get("requestId")
        if not request_id:
            return dict.fromkeys(keys, destinations.Delivered("accepted, no requestId"))
        detail = f"queued by Google, requestId {request_id}"
        return dict.fromkeys(keys, destinations.Delivered(detail, follow_up=str(request_id)))

    @property
    def follow_up_delay(self) -> float:
        return self.settings.request_status_delay_seconds

    @property
    def follow_up_deadline(self) -> float:
        return self.settings.request_status_deadline_seconds

    def follow_up(
        self, request_id: str, keys: Sequence[str], token: str | None
    ) -> destinations.OutgoingRequest:
        """`GET requestStatus:retrieve?requestId=…` for an accepted ingest or remove."""
        return google_rpc.status_request(
            self.settings.base_url, request_id, keys, self._headers(token), token
        )

    def interpret_follow_up(
        self, request: destinations.OutgoingRequest, response: destinations.Response
    ) -> dict[str, destinations.Outcome]:
        """Google's status of the user list: done (delivered or rejected) or not yet (retry)."""
        keys = request.event_pks
        if response.status != 200:
            refused = _refused(keys, response)
            if response.status in (401, 408, 429) or response.status >= 500:
                return refused
            return {k: google_rpc.final_refusal(o) for k, o in refused.items()}
        entries = google_rpc.json_body(response).get("requestStatusPerDestination") or []
        entries = [e for e in entries if isinstance(e, dict)]
        entry = google_rpc.entry_for(entries, self.settings.user_list_id)
        outcome = google_rpc.request_status(entry, self.settings.user_list_id, len(keys))
        if entry is not None and entry.get("requestStatus") == "PARTIAL_SUCCESS":
            # Google counts the failed members without naming them; adding a held member again
            # is harmless, so every member of the request is sent again.
            words = getattr(outcome, "detail", "") or getattr(outcome, "reason", "")
            outcome = destinations.Rejected(f"partial failure, all sent again: {words}")
        return dict.fromkeys(keys, outcome)

    def export_file(self, present: Set[str]) -> base.ExportFile:
        """Customer Match's upload file: hashed email, phone and names; country, zip clear."""
        fields = ("ph_e164", "fn", "ln", "country_code", "postal_code")

        def row(m: base.Member) -> list[str] | None:
            if not self.usable(m):
                return None
            ids = m.identifiers
            email = ids.get("em_google") or ids.get("em") or ""
            return [email, *(ids.get(k) or "" for k in fields)]

        return base.ExportFile(list(FILE_HEADERS), row)


def identifiers(member: base.Member) -> list[dict[str, Any]]:
    """The member's UserIdentifiers (at most 10): email, phone, address when complete."""
    ids = member.identifiers
    found: list[dict[str, Any]] = []
    email = ids.get("em_google") or ids.get("em")
    if email:
        found.append({"emailAddress": email})
    if ids.get("ph_e164"):
        found.append({"phoneNumber": ids["ph_e164"]})
    address = _address(ids)
    if address:
        found.append({"address": address})
    return found[:MAX_IDENTIFIERS]


def _address(ids: Mapping[str, str]) -> dict[str, str] | None:
    """Google's AddressInfo: all four parts, or none (hashed names, clear region and postal)."""
    region = (ids.get("country_code") or "").upper()
    if not (ids.get("fn") and ids.get("ln") and ids.get("postal_code")):
        return None
    if not re.fullmatch(r"[A-Z]{2}", region):
        return None
    return {
        "givenName": ids["fn"],
        "familyName": ids["ln"],
        "regionCode": region,
        "postalCode": ids["postal_code"],
    }


def _consent(granted: bool) -> str:
    return "CONSENT_GRANTED" if granted else "CONSENT_DENIED"


def _refused(
    keys: Sequence[str], response: destinations.Response
) -> dict[str, destinations.Outcome]:
    """A google.rpc.Status answer as outcomes per member.

    Data Manager validates fail-fast: a 400 naming `audience_members[i]` stored nothing, so those
    members are rejected and the others sent again at once; a 401 is retried (the token is
    fetched again), other refusals fail the request.
    """
    outcomes = google_rpc.rpc_error(keys, response)
    first = next(iter(outcomes.values()), None)
    if response.status == 401 and first is not None:
        return dict.fromkeys(keys, destinations.Retry(_reason(first), None))
    if response.status != 400 or first is None:
        return outcomes
    reason = _reason(first)
    error = google_rpc.json_body(response).get("error") or {}
    offending = _offending(error if isinstance(error, dict) else {}, len(keys))
    if not offending:
        return dict.fromkeys(keys, destinations.Rejected(reason))
    again = destinations.Retry(f"sent again without the refused member(s): {reason}", 0.0)
    return {
        key: destinations.Rejected(f"{offending[i]} ({reason})") if i in offending else again
        for i, key in enumerate(keys)
    }


def _reason(outcome: destinations.Outcome) -> str:
    return getattr(outcome, "reason", "") or getattr(outcome, "detail", "")


def _offending(error: Mapping[str, Any], count: int) -> dict[int, str]:
    """Member index -> Google's words, from BadRequest.fieldViolations."""
    found: dict[int, str] = {}
    for detail in error.get("details") or []:
        if not isinstance(detail, dict):
            continue
        for violation in detail.get("fieldViolations") or []:
            match = INDEX.search(str(violation.get("field", "")))
            if match and int(match.group(1)) < count:
                words = f"{violation.get('field')}: {violation.get('description', '')}"
                if violation.get("reason"):
                    words = f"{violation['reason']}: {words}"
                found[int(match.group(1))] = words
    return found
