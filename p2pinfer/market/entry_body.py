"""The base of every ledger entry body (market/entries.py, market/channel_entries.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from p2pinfer.protocol.schema import to_wire


@dataclass(frozen=True)
class Posting:
    """`amount` micro-credits into `account` (negative: out of it)."""

    account: str
    amount: int


class EntryBodyBase:
    """A ledger entry body: a frozen schema dataclass (protocol/schema.py) whose `kind`
    names it in the body map; by default it moves no credits and needs no check
    between its fields."""

    kind: ClassVar[str]

    def fields(self) -> dict[str, Any]:
        """The body's own fields as the body map holds them (keys as on the wire)."""
        return to_wire(self)

    def validate(self) -> None:
        """ValidationError unless the fields agree with each other (called after decoding)."""

    def postings(self) -> tuple[Posting, ...]:
        """The credits the entry moves, one posting per account (none by default)."""
        return ()
