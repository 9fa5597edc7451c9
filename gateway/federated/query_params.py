"""``GET /federated/v1/count`` query parameters (QIDO-RS style) -> :class:`AggregateRequest`.

``level=patients|studies|series``, attribute keywords (or their tags, ``00080061``) with QIDO
matching, ``finding=SCHEME:CODE[:present|absent|any]`` (a finding the report says is there,
by default; ``:absent``, one it says is not there) and
``measurement=SCHEME:CODE:min-max:UNIT``. With exactly one ``finding``, the measurements
qualify that finding ("a nodule over 8 mm"); otherwise each measurement is a finding filter
of its own (any finding with that measurement).
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.datadict import keyword_for_tag

from gateway.federated.cohort import (
    PRESENCE_NAMES,
    AggregateRequest,
    Cohort,
    CountSpec,
    FindingFilter,
    MeasurementFilter,
    PresenceName,
    attribute_matcher,
    check_attribute_keyword,
    parse_code,
)
from gateway.federated.matching import FilterError, number_range

LEVELS = ("patients", "studies", "series")


def _keyword(name: str) -> str:
    """A parameter name as a keyword: tags (``00100020``, ``0010,0020``) become keywords."""
    digits = name.replace(",", "")
    if len(digits) == 8 and all(c in "0123456789abcdefABCDEF" for c in digits):
        keyword = keyword_for_tag(int(digits, 16))
        if keyword:
            return keyword
    return name


def parse_measurement(text: str) -> MeasurementFilter:
    parts = text.split(":")
    if len(parts) != 4:
        raise FilterError("measurement", f"{text!r} is not SCHEME:CODE:min-max:UNIT")
    scheme, code, bounds, unit = parts
    concept = parse_code("measurement", f"{scheme}:{code}")
    if not unit:
        raise FilterError("measurement", f"{text!r} has no unit (UCUM, e.g. mm)")
    value_range = number_range("measurement", bounds)
    try:
        return MeasurementFilter(
            concept=concept, min=value_range.low, max=value_range.high, unit=unit
        )
    except ValueError as error:
        raise FilterError("measurement", f"{text!r}: {error}") from None


def parse_finding(text: str) -> tuple[str, PresenceName]:
    """``SCHEME:CODE`` (present) or ``SCHEME:CODE:present|absent|any``."""
    scheme, _, rest = text.partition(":")
    code, _, presence = rest.partition(":")
    if presence and presence not in PRESENCE_NAMES:
        raise FilterError(
            "finding", f"{text!r}: presence {presence!r} is not one of {', '.join(PRESENCE_NAMES)}"
        )
    chosen: PresenceName = presence or "present"
    return parse_code("finding", f"{scheme}:{code}"), chosen


def parse_count_query(params: Iterable[tuple[str, str]]) -> AggregateRequest:
    """The count request of a query string, or FilterError naming the bad parameter."""
    level = "patients"
    attributes: dict[str, list[str]] = {}
    findings: list[tuple[str, PresenceName]] = []
    measurements: list[MeasurementFilter] = []
    for name, value in params:
        if name == "level":
            if value not in LEVELS:
                raise FilterError("level", f"{value!r} is not one of {', '.join(LEVELS)}")
            level = value
        elif name == "finding":
            findings.append(parse_finding(value))
        elif name == "measurement":
            measurements.append(parse_measurement(value))
        else:
            keyword = _keyword(name)
            check_attribute_keyword(keyword)
            attributes.setdefault(keyword, []).append(value)
    if len(findings) == 1:
        ((code, presence),) = findings
        finding_filters = [
            FindingFilter(type=code, presence=presence, measurements=tuple(measurements))
        ]
    else:
        finding_filters = [FindingFilter(type=c, presence=p) for c, p in findings]
        finding_filters += [FindingFilter(measurements=(m,)) for m in measurements]
    values: dict[str, str | list[str]] = {
        k: v[0] if len(v) == 1 else v for k, v in attributes.items()
    }
    for keyword, given in values.items():
        attribute_matcher(keyword, given)  # FilterError naming the attribute
    try:
        cohort = Cohort(
            attributes=values,
            findings=tuple(finding_filters),
        )
    except ValueError as error:
        raise FilterError("cohort", str(error)) from None
    return AggregateRequest(cohort=cohort, level=level, aggregate=CountSpec())
