"""Routing rules: which models a series goes to, and why a series goes nowhere.

A rule matches a series when every condition of its ``match`` holds for the series'
attributes (read from its first instance) and the series has at least ``min_instances``.
Non-image series — SR, SEG, KO, PR and the like, our own results above all — are never
routed unless a rule sets ``include_non_images``.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from gateway.pipeline.settings import Condition, Pattern, Range, RoutingRule

NON_IMAGE_MODALITIES = frozenset(
    {"SR", "SEG", "KO", "PR", "RTSTRUCT", "RTPLAN", "RTDOSE", "RWV", "DOC", "ECG", "REG"}
)


@dataclass(frozen=True)
class Route:
    rule: str
    model: str
    inference_url: str


@dataclass(frozen=True)
class SeriesFacts:
    """What routing knows of a series: its first instance's header and its size."""

    series_instance_uid: str
    header: Dataset
    instance_count: int


def is_image_series(header: Dataset) -> bool:
    modality = str(header.get("Modality", "")).upper()
    return modality not in NON_IMAGE_MODALITIES and "Rows" in header


def route_series(rules: list[RoutingRule], series: SeriesFacts) -> tuple[list[Route], str]:
    """The routes of a series, and the reason when there are none."""
    routes: list[Route] = []
    reasons: list[str] = []
    image = is_image_series(series.header)
    for rule in rules:
        if not image and not rule.include_non_images:
            reasons.append(f"{rule.name}: not an image series")
            continue
        mismatch = _mismatch(rule, series)
        if mismatch:
            reasons.append(f"{rule.name}: {mismatch}")
            continue
        routes.extend(Route(rule.name, model, rule.inference_url) for model in rule.models)
    if routes:
        return routes, ""
    if not rules:
        return [], "no routing rules are configured"
    return [], "; ".join(reasons)


def _mismatch(rule: RoutingRule, series: SeriesFacts) -> str:
    if series.instance_count < rule.min_instances:
        return f"{series.instance_count} instances, fewer than {rule.min_instances}"
    for keyword, condition in rule.match.items():
        value = series.header.get(keyword)
        if value is None or value == "":
            return f"{keyword} is absent"
        if not _holds(condition, value):
            return f"{keyword} is {_show(value)}, not {_show_condition(condition)}"
    return ""


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, MultiValue | list) else [value]


def _holds(condition: Condition, value: Any) -> bool:
    values = _values(value)
    if isinstance(condition, Pattern):
        return any(re.search(condition.regex, str(v)) for v in values)
    if isinstance(condition, Range):
        try:
            numbers = [float(v) for v in values]
        except (TypeError, ValueError):
            return False
        return any(
            (condition.min is None or n >= condition.min)
            and (condition.max is None or n <= condition.max)
            for n in numbers
        )
    if isinstance(condition, list):
        return any(_holds(option, value) for option in condition)
    if isinstance(condition, int | float) and not isinstance(condition, bool):
        try:
            return any(float(v) == float(condition) for v in values)
        except (TypeError, ValueError):
            return False
    pattern = str(condition)
    if "*" in pattern or "?" in pattern:
        return any(fnmatch.fnmatchcase(str(v), pattern) for v in values)
    return any(str(v) == pattern for v in values)


def _show(value: Any) -> str:
    return "\\".join(str(v) for v in _values(value))[:64]


def _show_condition(condition: Condition) -> str:
    if isinstance(condition, Pattern):
        return f"matching /{condition.regex}/"
    if isinstance(condition, Range):
        return f"in [{condition.min}, {condition.max}]"
    if isinstance(condition, list):
        return " or ".join(str(c) for c in condition)
    return str(condition)
