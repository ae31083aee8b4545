"""The audience adapter interface: pure builders of the platforms' add/remove requests.

An audience adapter, like a conversion adapter (`destinations.base`), never does I/O. Given the
members to add or remove it *builds* the HTTP requests (at most `max_members` members each);
given the answer to one of them it *interprets* it into an outcome per member. The sync engine
owns the HTTP client, the outgoing-request log, the acknowledged set and the retries.

    sync engine                          adapter (pure)
    -----------                          --------------
    desired - acknowledged = adds  ───▶  build(Change.ADD, members, token)    -> [OutgoingRequest]
    acknowledged - desired = removes ─▶  build(Change.REMOVE, members, token) -> [OutgoingRequest]
    send each request              ───▶  interpret(request, response) -> {member key: Outcome}
    next runs, if it deferred      ───▶  follow_up(request_id, keys, token) -> OutgoingRequest
                                         interpret_follow_up(request, response) -> {key: Outcome}
    export (two passes, streamed)  ───▶  export_file(present keys) -> ExportFile(header, row)

`OutgoingRequest.event_pks` carries the member keys of a request here, in order. A member's
identifiers are the hashes firstparty already stores (`identity.pii.KEYS`: `em`, `em_google`,
`ph` (digits, no "+"), `ph_e164`, `external_id`, ...): adapters pick the ones their platform
matches on and never hash a stored hash again.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from firstparty.destinations.base import (
    DestinationSettings,
    Outcome,
    OutgoingRequest,
    Response,
)

__all__ = ["AudienceAdapter", "Change", "ExportFile", "Member"]


class Change(StrEnum):
    """What a request does to the platform's list."""

    ADD = "add"
    REMOVE = "remove"


@dataclass(frozen=True)
class Member:
    """One member: a person (`u:<user id>`, all their devices) or a lone visitor (`v:<id>`)."""

    key: str
    identifiers: Mapping[str, str]  # stored hashes by `identity.pii.KEYS` name
    ad_user_data: bool = False
    ad_personalization: bool = False


@dataclass(frozen=True)
class ExportFile:
    """A platform's upload file, row by row: its header, and each member's row (None: a member
    the file leaves out). Made from the identifier keys the exported members carry, read in a
    first pass, so the members are never held (`audiences.preview.export`)."""

    header: list[str]
    row: Callable[[Member], list[str] | None]


def present_keys(adapter: AudienceAdapter, members: Iterable[Member]) -> set[str]:
    """The identifier keys with a value among the members this platform can match."""
    found: set[str] = set()
    for member in members:
        if adapter.usable(member):
            found.update(k for k, v in member.identifiers.items() if v)
    return found


class AudienceAdapter:
    """Base of every audience adapter; subclasses set the class attributes and override."""

    type: ClassVar[str]
    settings_model: ClassVar[builtins.type[DestinationSettings]] = DestinationSettings
    max_members: ClassVar[int] = 10_000  # per request
    min_members: ClassVar[int] = 100  # matched members the platform needs before targeting
    identifier_keys: ClassVar[tuple[str, ...]] = ()  # the stored hashes it matches on

    def __init__(self, settings: DestinationSettings) -> None:
        self.settings = settings

    def usable(self, member: Member) -> bool:
        """Whether the member carries at least one identifier this platform matches on."""
        return any(member.identifiers.get(key) for key in self.identifier_keys)

    @property
    def needs_token(self) -> bool:
        return False

    def token_request(self) -> OutgoingRequest | None:
        return None

    def read_token(self, response: Response) -> tuple[str, float]:
        raise NotImplementedError

    def build(
        self, change: Change, members: Sequence[Member], token: str | None = None
    ) -> list[OutgoingRequest]:
        """The requests adding or removing these members (each at most `max_members`)."""
        raise NotImplementedError

    def interpret(self, request: OutgoingRequest, response: Response) -> dict[str, Outcome]:
        """An outcome (Delivered, Retry or Rejected) for every member key the request carries."""
        raise NotImplementedError

    @property
    def follow_up_delay(self) -> float:
        """Seconds from acceptance (`Delivered(follow_up=...)`) to the first follow-up."""
        return 0.0

    @property
    def follow_up_deadline(self) -> float:
        """Seconds from acceptance after which the sync stops asking and sends the add again."""
        return 0.0

    def follow_up(self, request_id: str, keys: Sequence[str], token: str | None) -> OutgoingRequest:
        """The request asking what became of an accepted add (only adapters that defer)."""
        raise NotImplementedError

    def interpret_follow_up(
        self, request: OutgoingRequest, response: Response
    ) -> dict[str, Outcome]:
        """Per member asked about: Delivered or Rejected once the platform is done, else Retry."""
        raise NotImplementedError

    def export_file(self, present: Set[str]) -> ExportFile:
        """The platform's upload format for manual upload, given the identifier keys with a
        value among the members it will hold (`present_keys`)."""
        raise NotImplementedError

    def export(self, members: Sequence[Member]) -> tuple[list[str], list[list[str]]]:
        """The upload file of these members, held: a header and one row per member."""
        file = self.export_file(present_keys(self, members))
        return file.header, [row for m in members if (row := file.row(m)) is not None]
