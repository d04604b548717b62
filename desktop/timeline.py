"""Date buckets for the timeline: photos grouped by the day or month they were taken.

Qt-free. The date is EXIF taken-at when the photo has one, else the file's time (what
the browse listing already sorts by, newest first), so consecutive photos of one bucket
make one section.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from desktop.catalog import Photo

UNITS = ("day", "month")


@dataclass(frozen=True)
class Section:
    key: str  # "2024-03" (month) or "2024-03-14" (day)
    label: str  # "March 2024", "Thursday 14 March 2024"
    start: int  # index of its first photo in the listing
    count: int


def taken(photo: Photo) -> datetime:
    """When a photo was taken: EXIF taken-at, else the file's modification time."""
    if photo.taken_at:
        try:
            return datetime.fromisoformat(photo.taken_at.replace("Z", ""))
        except ValueError:
            pass  # a camera wrote nonsense: fall back to the file's time
    return datetime.fromtimestamp(photo.mtime)


def bucket(when: datetime, unit: str) -> tuple[str, str]:
    if unit == "day":
        return when.strftime("%Y-%m-%d"), f"{when:%A} {when.day} {when:%B %Y}"
    if unit == "month":
        return when.strftime("%Y-%m"), when.strftime("%B %Y")
    raise ValueError(f"unknown timeline unit {unit!r} (expected one of {UNITS})")


def sections(photos: Sequence[Photo], unit: str = "month") -> list[Section]:
    """Runs of consecutive photos in one bucket. A bucket that comes back later (the
    listing is not sorted by date) starts a new section rather than moving photos."""
    out: list[Section] = []
    key = label = None
    start = 0
    for i, photo in enumerate(photos):
        k, lab = bucket(taken(photo), unit)
        if k != key:
            if key is not None:
                out.append(Section(key, label, start, i - start))  # type: ignore[arg-type]
            key, label, start = k, lab, i
    if key is not None:
        out.append(Section(key, label, start, len(photos) - start))  # type: ignore[arg-type]
    return out


_DATE_TERM = re.compile(r"(?<!\S)(from|to|in):(\d{4}(?:-\d{2}(?:-\d{2})?)?)(?!\S)", re.IGNORECASE)


def date_terms(text: str) -> tuple[str, str | None, str | None]:
    """Pull `from:2023-05`, `to:2023-06-30`, `in:2024` (a year, month or day) out of a
    query: (the rest of the text, taken on or after, taken on or before). The search
    filters compare these with EXIF taken-at, a month or year covering all its days."""
    date_from = date_to = None
    for kind, value in _DATE_TERM.findall(text):
        kind = kind.lower()
        if kind in ("from", "in"):
            date_from = value
        if kind in ("to", "in"):
            date_to = value
    rest = " ".join(_DATE_TERM.sub(" ", text).split())
    return rest, date_from, date_to
