"""Cohorts and dimensions as SQL over the findings index (both SQLite and PostgreSQL).

Every filter becomes an uncorrelated ``IN (SELECT ...)`` semi-join, which both engines run as
one scan of an index and a hash lookup per study, instead of one probe per study. Every value
is a bound parameter; the only text put into SQL comes from the fixed tables below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.federated.cohort import (
    SERIES_ATTRIBUTES,
    STUDY_ATTRIBUTES,
    STUDY_SERIES_ATTRIBUTES,
    BinnedDimension,
    CategoryDimension,
    Cohort,
    Dimension,
    FindingFilter,
    Level,
)
from gateway.federated.matching import Exact, Matcher, Range, Wildcard
from gateway.index.units import canonical, canonical_unit

UNIT_COLUMN: dict[str, str] = {
    "patients": "s.patient_key",
    "studies": "s.study_key",
    "series": "r.series_key",
}


@dataclass
class Sql:
    """A SQL fragment and its parameters, in order."""

    text: str
    params: list[Any] = field(default_factory=list)


def _match(column: str, matcher: Matcher) -> Sql:
    if isinstance(matcher, Exact):
        marks = ", ".join("?" for _ in matcher.values)
        return Sql(f"{column} IN ({marks})", list(matcher.values))
    if isinstance(matcher, Wildcard):
        return Sql(f"{column} LIKE ? ESCAPE '\\'", [matcher.like()])
    assert isinstance(matcher, Range)
    parts, params = [], []
    if matcher.low is not None:
        parts.append(f"{column} >= ?")
        params.append(matcher.low)
    if matcher.high is not None:
        parts.append(f"{column} <= ?")
        params.append(matcher.high)
    return Sql(" AND ".join(parts) or "1 = 1", params)


def finding_predicate(finding: FindingFilter, alias: str) -> Sql:
    """Conditions on one finding row ``alias`` (of ``findings``) for a finding filter."""
    parts: list[str] = []
    params: list[Any] = []
    for column, value in (("finding_type", finding.type), ("finding_site", finding.site),
                          ("algorithm_name", finding.algorithm)):
        if value is not None:
            parts.append(f"{alias}.{column} = ?")
            params.append(value)
    for qualitative in finding.qualitative:
        parts.append(
            f"{alias}.finding_key IN (SELECT q.finding_key FROM qualitative q "
            "WHERE q.concept = ? AND q.value = ?)"
        )
        params += [qualitative.concept, qualitative.value]
    for measurement in finding.measurements:
        condition = ["m.concept = ?", "m.unit = ?"]
        bounds: list[Any] = [measurement.concept, canonical_unit(measurement.unit)]
        if measurement.min is not None:
            condition.append("m.value >= ?")
            bounds.append(canonical(measurement.min, measurement.unit)[0])
        if measurement.max is not None:
            condition.append("m.value <= ?")
            bounds.append(canonical(measurement.max, measurement.unit)[0])
        parts.append(
            f"{alias}.finding_key IN (SELECT m.finding_key FROM measurements m "
            f"WHERE {' AND '.join(condition)})"
        )
        params += bounds
    return Sql(" AND ".join(parts) or "1 = 1", params)


def cohort_where(cohort: Cohort, level: Level) -> Sql:
    """The WHERE condition over ``studies s`` (and ``series r`` at series level)."""
    parts: list[str] = []
    params: list[Any] = []

    def add(fragment: Sql) -> None:
        parts.append(fragment.text)
        params.extend(fragment.params)

    matchers = cohort.matchers()
    series_matchers = {k: m for k, m in matchers.items() if k in SERIES_ATTRIBUTES}
    for keyword, matcher in matchers.items():
        if keyword in STUDY_ATTRIBUTES:
            add(_match(f"s.{STUDY_ATTRIBUTES[keyword]}", matcher))
        elif keyword in STUDY_SERIES_ATTRIBUTES:
            inner = _match(f"rm.{STUDY_SERIES_ATTRIBUTES[keyword]}", matcher)
            add(Sql(f"s.study_key IN (SELECT rm.study_key FROM series rm WHERE {inner.text})",
                    inner.params))
    if series_matchers:
        # QIDO series-level matching: one series must match all series-level filters.
        alias = "r" if level == "series" else "r0"
        conditions = [_match(f"{alias}.{SERIES_ATTRIBUTES[k]}", m)
                      for k, m in series_matchers.items()]
        text = " AND ".join(c.text for c in conditions)
        values = [p for c in conditions for p in c.params]
        if level == "series":
            add(Sql(text, values))
        else:
            add(Sql(f"s.study_key IN (SELECT r0.study_key FROM series r0 WHERE {text})", values))
    for finding in cohort.findings:
        inner = finding_predicate(finding, "f")
        add(Sql(f"s.study_key IN (SELECT f.study_key FROM findings f WHERE {inner.text})",
                inner.params))
    if cohort.patient_has is not None:
        for modality in cohort.patient_has.modalities:
            add(Sql("s.patient_key IN (SELECT rp.patient_key FROM series rp "
                    "WHERE rp.modality = ?)", [modality]))
        for finding in cohort.patient_has.findings:
            inner = finding_predicate(finding, "fp")
            add(Sql(f"s.patient_key IN (SELECT fp.patient_key FROM findings fp "
                    f"WHERE {inner.text})", inner.params))
    return Sql(" AND ".join(parts) or "1 = 1", params)


def base_from(level: Level) -> str:
    if level == "series":
        return "studies s JOIN series r ON r.study_key = s.study_key"
    return "studies s"


def membership_sql(cohort: Cohort, level: Level) -> Sql:
    """The distinct (unit, patient) pairs of a cohort: who is behind an answer."""
    where = cohort_where(cohort, level)
    return Sql(
        f"SELECT DISTINCT {UNIT_COLUMN[level]}, s.patient_key FROM {base_from(level)} "
        f"WHERE {where.text}",
        where.params,
    )


@dataclass
class DimensionSql:
    """The joins and value expressions that place each cohort row in a cell."""

    joins: list[Sql]
    expressions: list[str]
    conditions: list[Sql]
    #: Per dimension, the value before binning (the category itself for categories).
    raw: list[str]


def dimension_sql(cohort: Cohort, level: Level, dimensions: list[Dimension]) -> DimensionSql:
    joins: list[Sql] = []
    expressions: list[str] = []
    conditions: list[Sql] = []
    raw: list[str] = []
    finding_alias: str | None = None

    def findings_join() -> str:
        nonlocal finding_alias
        if finding_alias is None:
            finding_alias = "fd"
            # Finding dimensions describe the findings the cohort asked about, if it did.
            predicates = [finding_predicate(f, "fd") for f in cohort.findings]
            text = "fd.study_key = s.study_key"
            params: list[Any] = []
            if predicates:
                text += " AND (" + " OR ".join(f"({p.text})" for p in predicates) + ")"
                params = [v for p in predicates for v in p.params]
            joins.append(Sql(f"JOIN findings fd ON {text}", params))
        return finding_alias

    for number, dimension in enumerate(dimensions):
        if isinstance(dimension, CategoryDimension):
            name = dimension.name
            if name in {"modality", "body_part"}:
                column = "modality" if name == "modality" else "body_part"
                if level == "series":
                    expressions.append(f"r.{column}")
                else:
                    alias = f"rd{number}"
                    joins.append(Sql(f"JOIN series {alias} ON {alias}.study_key = s.study_key"))
                    expressions.append(f"{alias}.{column}")
            elif name == "sex":
                expressions.append("s.patient_sex")
            elif name == "study_year":
                expressions.append("s.study_year")
            elif name in {"finding_type", "finding_site", "algorithm"}:
                alias = findings_join()
                column = {"finding_type": "finding_type", "finding_site": "finding_site",
                          "algorithm": "algorithm_name"}[name]
                expressions.append(f"{alias}.{column}")
            else:  # qualitative
                alias = findings_join()
                q = f"qd{number}"
                joins.append(Sql(f"JOIN qualitative {q} ON {q}.finding_key = {alias}.finding_key "
                                 f"AND {q}.concept = ?", [dimension.concept]))
                expressions.append(f"{q}.value")
            raw.append(expressions[-1])
        else:
            value = _binned_value(dimension, number, findings_join, joins)
            raw.append(value)
            # Bin index (0-based) of values inside [start, stop).
            expressions.append(f"CAST(({value} - ?) / ? AS INTEGER)")
            conditions.append(Sql(f"{value} >= ? AND {value} < ?",
                                  [dimension.start, dimension.stop]))
    return DimensionSql(joins, expressions, conditions, raw)


def _binned_value(dimension: BinnedDimension, number: int, findings_join: Any,
                  joins: list[Sql]) -> str:
    if dimension.of == "age":
        return "s.age_years"
    alias = findings_join()
    m = f"md{number}"
    assert dimension.concept is not None and dimension.unit is not None
    factor = canonical(1.0, dimension.unit)[0]
    joins.append(Sql(f"JOIN measurements {m} ON {m}.finding_key = {alias}.finding_key "
                     f"AND {m}.concept = ? AND {m}.unit = ?",
                     [dimension.concept, canonical_unit(dimension.unit)]))
    return f"({m}.value / {float(factor)!r})"


def cells_sql(cohort: Cohort, level: Level, dimensions: list[Dimension],
              max_rows_per_patient: int | None = None) -> Sql:
    """Per cell: the dimension values, distinct units and distinct patients.

    With ``max_rows_per_patient`` (differential privacy), a patient's rows beyond the first
    ``max_rows_per_patient`` are left out, which bounds one patient's influence (sensitivity).
    """
    where = cohort_where(cohort, level)
    dims = dimension_sql(cohort, level, dimensions)
    names = [f"d{i}" for i in range(len(dimensions))]
    select = ", ".join(f"{e} AS {n}" for e, n in zip(dims.expressions, names, strict=True))
    select_params: list[Any] = []
    for dimension in dimensions:
        if isinstance(dimension, BinnedDimension):
            select_params += [dimension.start, dimension.width]
    join_text = " ".join(j.text for j in dims.joins)
    join_params = [p for j in dims.joins for p in j.params]
    conditions = [where, *dims.conditions]
    condition_text = " AND ".join(c.text for c in conditions)
    condition_params = [p for c in conditions for p in c.params]
    facts = (f"SELECT DISTINCT {select}, {UNIT_COLUMN[level]} AS unit, s.patient_key AS patient "
             f"FROM {base_from(level)} {join_text} WHERE {condition_text}")
    params = select_params + join_params + condition_params
    group = ", ".join(names)
    if max_rows_per_patient is None:
        return Sql(f"SELECT {group}, COUNT(DISTINCT unit), COUNT(DISTINCT patient) "
                   f"FROM ({facts}) facts GROUP BY {group}", params)
    ranked = (f"SELECT {group}, unit, patient, ROW_NUMBER() OVER "
              f"(PARTITION BY patient ORDER BY unit, {group}) AS rank FROM ({facts}) facts")
    return Sql(f"SELECT {group}, COUNT(*), COUNT(DISTINCT patient) FROM ({ranked}) ranked "
               f"WHERE rank <= ? GROUP BY {group}", [*params, max_rows_per_patient])


def values_sql(cohort: Cohort, level: Level, dimension: BinnedDimension) -> Sql:
    """The numeric values behind a summary, one per unit (per finding for measurements)."""
    where = cohort_where(cohort, level)
    dims = dimension_sql(cohort, level, [dimension])
    raw = dims.raw[0]
    join_text = " ".join(j.text for j in dims.joins)
    join_params = [p for j in dims.joins for p in j.params]
    unit = "fd.finding_key" if dimension.of == "measurement" else UNIT_COLUMN[level]
    return Sql(
        f"SELECT DISTINCT {unit}, s.patient_key, {raw} FROM {base_from(level)} {join_text} "
        f"WHERE {where.text} AND {raw} IS NOT NULL",
        join_params + where.params,
    )
