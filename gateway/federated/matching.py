"""QIDO-RS attribute matching (PS3.18 8.3.4, PS3.4 C.2.2.2) for cohort filters.

A filter value is matched as DICOM matches it: single value (exact), wildcard (``*`` any
sequence, ``?`` one character), range (``a-b``, either end open) for dates, ages and numbers,
and list-of-values (``CT,MR`` or ``CT\\MR``): any one of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class FilterError(ValueError):
    """A filter that cannot be used; ``field`` names it (a 400 says which one and why)."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


@dataclass(frozen=True)
class Exact:
    values: tuple[str, ...]


@dataclass(frozen=True)
class Wildcard:
    pattern: str  # as given, with * and ?

    def like(self) -> str:
        """The pattern as a SQL LIKE pattern with ``\\`` as the escape character."""
        escaped = self.pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return escaped.replace("*", "%").replace("?", "_")


@dataclass(frozen=True)
class Range:
    low: float | None
    high: float | None


Matcher = Exact | Wildcard | Range

_LIST_SEPARATORS = re.compile(r"[,\\]")


def text_matcher(field: str, value: str | list[str]) -> Matcher:
    """Exact, list or wildcard matching of a text attribute (e.g. Modality, BodyPartExamined)."""
    values = _values(field, value)
    if len(values) == 1 and any(c in values[0] for c in "*?"):
        return Wildcard(values[0])
    if any(any(c in v for c in "*?") for v in values):
        raise FilterError(field, "a wildcard cannot be combined with a list of values")
    return Exact(tuple(values))


def code_list_matcher(field: str, value: str | list[str], allowed: set[str]) -> Exact:
    values = tuple(v.upper() for v in _values(field, value))
    for v in values:
        if v not in allowed:
            raise FilterError(field, f"{v!r} is not one of {sorted(allowed)}")
    return Exact(values)


def date_matcher(field: str, value: str) -> Range:
    """A DA value or range, ``YYYYMMDD``, ``YYYYMMDD-``, ``-YYYYMMDD``, ``A-B`` (inclusive), or
    whole years, ``YYYY`` or ``YYYY-YYYY`` (January 1 of the first to December 31 of the last),
    so that a cohort asked by years (the dashboard) never sends an exact date."""
    low, high = _split_range(field, value)
    return Range(_date(field, low, "0101"), _date(field, high, "1231"))


def age_matcher(field: str, value: str) -> Range:
    """Whole years: ``60``, ``60-70``, ``60-``, ``-18``, or DICOM AS ``060Y-070Y``."""
    low, high = _split_range(field, value)
    return Range(_years(field, low), _years(field, high))


def number_range(field: str, value: str) -> Range:
    low, high = _split_range(field, value)
    return Range(_number(field, low), _number(field, high))


def _values(field: str, value: str | list[str]) -> list[str]:
    raw = value if isinstance(value, list) else [value]
    values = [v.strip() for item in raw for v in _LIST_SEPARATORS.split(item) if v.strip()]
    if not values:
        raise FilterError(field, "empty value (leave the filter out to match everything)")
    return values


def _split_range(field: str, value: str) -> tuple[str | None, str | None]:
    text = value.strip()
    if not text:
        raise FilterError(field, "empty value")
    if "-" not in text.lstrip("-") and not text.startswith("-"):
        return text, text
    if text.startswith("-"):
        return None, text[1:]
    low, _, high = text.partition("-")
    if "-" in high:
        raise FilterError(field, f"{value!r} is not a range 'low-high'")
    return low or None, high or None


def _date(field: str, text: str | None, month_day: str) -> float | None:
    """``YYYYMMDD``, or ``YYYY`` completed with ``month_day`` (the range's first or last day)."""
    if text is None:
        return None
    if re.fullmatch(r"\d{4}", text):
        text += month_day
    if not re.fullmatch(r"\d{8}", text):
        raise FilterError(field, f"{text!r} is not a date YYYYMMDD or a year YYYY")
    return float(text)


def _years(field: str, text: str | None) -> float | None:
    if text is None:
        return None
    match = re.fullmatch(r"(\d{1,3})Y?", text.upper())
    if match is None:
        raise FilterError(field, f"{text!r} is not an age in whole years (e.g. 60 or 060Y)")
    return float(match.group(1))


def _number(field: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        raise FilterError(field, f"{text!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise FilterError(field, f"{text!r} is not a finite number")
    return number
