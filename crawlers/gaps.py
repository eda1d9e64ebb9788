"""Gaps: the stretches of a listing that a walk did not see, and how a later walk closes them.

Boards list posts newest first, by descending id (the order the early stop already relies
on), so a stretch is named by ids, not page numbers: page numbers shift as new posts arrive,
ids do not. A gap is the open id interval (below, above): every post id strictly between the
lowest id seen above the stretch (None: the top of the listing) and the highest id seen
below it (0: the bottom, for a listing whose end could not be proven).

A later walk closes a gap by walking past it (down to an id <= below, or to the listing's
end): it then saw every post in the stretch that the board shows. If that walk finds the
same stretch empty again, the board has nothing there (Danbooru hides some posts from
anonymous visitors; a listing can end on a full page): two walks that agree are trusted,
so a refresh does not walk to the same place for ever.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Gap:
    below: int  # the highest id seen below the stretch; 0 when the stretch reaches the bottom
    above: int | None  # the lowest id seen above it; None when it starts at the top
    cursors: tuple[str, ...] = field(default=(), compare=False)  # the pages that came back empty or short

    def within(self, other: "Gap") -> bool:
        """This stretch lies inside `other`."""
        top_inside = other.above is None or (self.above is not None and self.above <= other.above)
        return other.below <= self.below and top_inside

    def passed_by(self, lowest_seen: int | None, reached_end: bool) -> bool:
        """A walk that got down to `lowest_seen` (or to the end) saw the whole stretch."""
        return reached_end or (lowest_seen is not None and lowest_seen <= self.below)

    def to_json(self) -> dict[str, Any]:
        return {"below": self.below, "above": self.above, "cursors": list(self.cursors)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Gap":
        above = data.get("above")
        return cls(int(data["below"]), None if above is None else int(above),
                   tuple(str(c) for c in data.get("cursors", ())))


def must_reach(gaps: list[Gap]) -> int | None:
    """The id a walk must get down to before it may stop early: the lowest gap's lower bound."""
    return min((gap.below for gap in gaps), default=None)


def gaps_after_walk(old: list[Gap], new: list[Gap], lowest_seen: int | None, reached_end: bool) -> list[Gap]:
    """The gaps still open after a walk: the old ones it did not pass, and the new ones it found,
    except those inside an old gap it passed (the same stretch empty twice: nothing is there)."""
    passed = [gap for gap in old if gap.passed_by(lowest_seen, reached_end)]
    still_open = [gap for gap in old if gap not in passed]
    found = [gap for gap in new if not any(gap.within(earlier) for earlier in passed)]
    return still_open + [gap for gap in found if gap not in still_open]


def read_gaps(entry: dict[str, Any]) -> list[Gap] | None:
    """The gaps of one crawl_state.json entry (an entry from before gaps has none), or None
    when they cannot be read: the caller then trusts nothing of that entry."""
    try:
        return [Gap.from_json(gap) for gap in entry.get("gaps") or []]
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
