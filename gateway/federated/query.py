"""Cohorts and dimensions as SQL over the findings index (both SQLite and PostgreSQL).

Every value is a bound parameter; the only text put into SQL comes from the fixed tables
below and the aliases chosen here.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    MeasurementFilter,
)
from gateway.federated.matching import Exact, Matcher, Range, Wildcard
from tabular.units import canonical, canonical_unit

#: The bin of values outside a binned dimension's [start, stop), or missing.
OUTSIDE = -1

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


def _type_and_presence(finding: FindingFilter, alias: str) -> Sql:
    """The finding type and presence asked, on finding row ``alias``.

    Absent is a row of the type whose presence is denied, or a "found nothing" row (no type,
    absent) of an algorithm that reports this type elsewhere in the index: an empty report of
    the nodule detector says there is no nodule.
    """
    if finding.type is None:
        if finding.presence == "any":
            return Sql("1 = 1")
        return Sql(f"{alias}.presence = ?", [finding.presence])
    if finding.presence == "present":
        return Sql(f"{alias}.finding_type = ? AND {alias}.presence = ?", [finding.type, "present"])
    found_nothing = (
        f"({alias}.finding_type IS NULL AND {alias}.presence = 'absent' AND "
        f"{alias}.algorithm_name IN (SELECT fa.algorithm_name FROM findings fa "
        "WHERE fa.finding_type = ?))"
    )
    if finding.presence == "absent":
        return Sql(
            f"(({alias}.finding_type = ? AND {alias}.presence = 'absent') OR {found_nothing})",
            [finding.type, finding.type],
        )
    return Sql(f"({alias}.finding_type = ? OR {found_nothing})", [finding.type, finding.type])


def _measured_presence(finding: FindingFilter, alias: str) -> Sql:
    """Type and presence on a measurement row ``alias`` (a "found nothing" row has no
    measurement, so only the row's own presence counts)."""
    parts, params = [], []
    if finding.type is not None:
        parts.append(f"{alias}.finding_type = ?")
        params.append(finding.type)
    if finding.presence != "any":
        parts.append(f"{alias}.presence = ?")
        params.append(finding.presence)
    return Sql(" AND ".join(parts) or "1 = 1", params)


def finding_predicate(
    finding: FindingFilter, alias: str, *, skip_type: bool = False, skip_measurements: int = 0
) -> Sql:
    """Conditions on one finding row ``alias`` (of ``findings``) for a finding filter;
    ``skip_type``: type and presence were checked on a measurement row already."""
    parts: list[str] = []
    params: list[Any] = []
    if not skip_type:
        typed = _type_and_presence(finding, alias)
        if typed.text != "1 = 1":
            parts.append(typed.text)
            params += typed.params
    for column, value in (
        ("finding_site", finding.site),
        ("algorithm_name", finding.algorithm),
        ("algorithm_version", finding.algorithm_version),
    ):
        if value is not None:
            parts.append(f"{alias}.{column} = ?")
            params.append(value)
    for qualitative in finding.qualitative:
        parts.append(
            f"EXISTS (SELECT 1 FROM qualitative q WHERE q.finding_key = {alias}.finding_key "
            "AND q.concept = ? AND q.value = ?)"
        )
        params += [qualitative.concept, qualitative.value]
    for measurement in finding.measurements[skip_measurements:]:
        condition = _measurement_condition(measurement, "m")
        parts.append(
            f"EXISTS (SELECT 1 FROM measurements m WHERE m.finding_key = "
            f"{alias}.finding_key AND {condition.text})"
        )
        params += condition.params
    return Sql(" AND ".join(parts) or "1 = 1", params)


def _measurement_condition(measurement: MeasurementFilter, alias: str) -> Sql:
    parts = [f"{alias}.concept = ?", f"{alias}.unit = ?"]
    params: list[Any] = [measurement.concept, canonical_unit(measurement.unit)]
    if measurement.min is not None:
        parts.append(f"{alias}.value >= ?")
        params.append(canonical(measurement.min, measurement.unit)[0])
    if measurement.max is not None:
        parts.append(f"{alias}.value <= ?")
        params.append(canonical(measurement.max, measurement.unit)[0])
    return Sql(" AND ".join(parts), params)


def _answered_by_study_ranges(finding: FindingFilter) -> bool:
    """Whether a study's smallest and largest values of a measurement decide the filter: a
    type and presence and one measurement with at most one bound (with both, the smallest
    value may be under the range and the largest over it while no finding lies inside)."""
    if len(finding.measurements) != 1:
        return False
    (measurement,) = finding.measurements
    return (
        (measurement.min is None or measurement.max is None)
        and finding.site is None
        and finding.algorithm is None
        and finding.algorithm_version is None
        and not finding.qualitative
    )


def finding_exists(finding: FindingFilter, study_key: str) -> Sql:
    """EXISTS a finding of the study ``study_key`` satisfying ``finding``.

    With a measurement, the (denormalised) measurements table drives: one covering-index probe
    per study (``measurements_study``); the finding row is read only for what remains. A
    filter of a type and one bound of one measurement ("a nodule of 8 mm or more") is a probe
    of the study's smallest and largest values instead (``study_measurements``): a few rows
    per study, not every measurement of it.
    """
    if _answered_by_study_ranges(finding):
        (measurement,) = finding.measurements
        parts = [f"sm.study_key = {study_key}", "sm.concept = ?", "sm.unit = ?"]
        params: list[Any] = [measurement.concept, canonical_unit(measurement.unit)]
        typed = _measured_presence(finding, "sm")
        if typed.text != "1 = 1":
            parts.append(typed.text)
            params += typed.params
        if measurement.min is not None:
            parts.append("sm.high >= ?")
            params.append(canonical(measurement.min, measurement.unit)[0])
        if measurement.max is not None:
            parts.append("sm.low <= ?")
            params.append(canonical(measurement.max, measurement.unit)[0])
        return Sql(
            f"EXISTS (SELECT 1 FROM study_measurements sm WHERE {' AND '.join(parts)})", params
        )
    if not finding.measurements:
        inner = finding_predicate(finding, "f")
        return Sql(
            f"EXISTS (SELECT 1 FROM findings f WHERE f.study_key = {study_key} AND {inner.text})",
            inner.params,
        )
    first = _measurement_condition(finding.measurements[0], "m0")
    parts = [f"m0.study_key = {study_key}", first.text]
    params = list(first.params)
    typed = _measured_presence(finding, "m0")
    if typed.text != "1 = 1":
        parts.append(typed.text)
        params += typed.params
    rest = finding_predicate(finding, "f", skip_type=True, skip_measurements=1)
    join = ""
    if rest.text != "1 = 1":
        join = "JOIN findings f ON f.finding_key = m0.finding_key "
        parts.append(rest.text)
        params += rest.params
    return Sql(f"EXISTS (SELECT 1 FROM measurements m0 {join}WHERE {' AND '.join(parts)})", params)


def cohort_where(cohort: Cohort, level: Level, *, findings: bool = True) -> Sql:
    """The WHERE condition over ``studies s`` (and ``series r`` at series level); without the
    finding filters if ``findings`` is false (a join that implies them is added instead).

    Every filter is a correlated EXISTS probing a covering index per candidate study: the cost
    grows with the number of studies, never with the size of an intermediate set.
    """
    parts: list[str] = []
    params: list[Any] = []

    def add(fragment: Sql) -> None:
        parts.append(fragment.text)
        params.extend(fragment.params)

    matchers = cohort.matchers()
    series_matchers = {k: m for k, m in matchers.items() if k in SERIES_ATTRIBUTES}
    # Plain columns of the study first: SQLite tests terms in order, and a column costs
    # nothing next to an index probe.
    for keyword, matcher in matchers.items():
        if keyword in STUDY_ATTRIBUTES:
            add(_match(f"s.{STUDY_ATTRIBUTES[keyword]}", matcher))
    for keyword, matcher in matchers.items():
        if keyword == "ModalitiesInStudy" and isinstance(matcher, Exact):
            # The study row's '/CT/SR/' list: no probe of the series table.
            add(
                Sql(
                    "(" + " OR ".join("s.modalities LIKE ?" for _ in matcher.values) + ")",
                    [f"%/{value}/%" for value in matcher.values],
                )
            )
        elif keyword in STUDY_SERIES_ATTRIBUTES:
            inner = _match(f"rm.{STUDY_SERIES_ATTRIBUTES[keyword]}", matcher)
            add(
                Sql(
                    f"EXISTS (SELECT 1 FROM series rm WHERE rm.study_key = s.study_key "
                    f"AND {inner.text})",
                    inner.params,
                )
            )
    if series_matchers:
        # QIDO series-level matching: one series must match all series-level filters.
        alias = "r" if level == "series" else "r0"
        conditions = [
            _match(f"{alias}.{SERIES_ATTRIBUTES[k]}", m) for k, m in series_matchers.items()
        ]
        text = " AND ".join(c.text for c in conditions)
        values = [p for c in conditions for p in c.params]
        if level == "series":
            add(Sql(text, values))
        else:
            add(
                Sql(
                    f"EXISTS (SELECT 1 FROM series r0 WHERE r0.study_key = s.study_key AND {text})",
                    values,
                )
            )
    for finding in cohort.findings if findings else ():
        add(finding_exists(finding, "s.study_key"))
    if cohort.patient_has is not None:
        for modality in cohort.patient_has.modalities:
            add(
                Sql(
                    "EXISTS (SELECT 1 FROM series rp WHERE rp.patient_key = s.patient_key "
                    "AND rp.modality = ?)",
                    [modality],
                )
            )
        for finding in cohort.patient_has.findings:
            inner = finding_predicate(finding, "fp")
            add(
                Sql(
                    "EXISTS (SELECT 1 FROM findings fp WHERE fp.patient_key = s.patient_key "
                    f"AND {inner.text})",
                    inner.params,
                )
            )
    return Sql(" AND ".join(parts) or "1 = 1", params)


def base_from(level: Level) -> str:
    if level == "series":
        return "studies s JOIN series r ON r.study_key = s.study_key"
    return "studies s"


def unit_columns(level: Level) -> str:
    """The unit and patient of a row; at patient level the unit is the patient, selected once
    (a column less to copy into Python for each of tens of thousands of rows)."""
    if level == "patients":
        return "s.patient_key AS unit"
    return f"{UNIT_COLUMN[level]} AS unit, s.patient_key AS patient"


def membership_sql(cohort: Cohort, level: Level, columns: Sequence[str] = ()) -> Sql:
    """The (unit, patient) pairs of a cohort (see :func:`unit_columns`): who is behind an
    answer, then ``columns``.

    No DISTINCT: each study (or series) row is one unit already, and duplicate patients are
    removed by the caller (numpy), which is cheaper than SQLite's temporary B-tree.
    """
    where = cohort_where(cohort, level)
    return Sql(
        f"SELECT {', '.join([unit_columns(level), *columns])} "
        f"FROM {base_from(level)} "
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


def _finding_restriction(cohort: Cohort, alias: str) -> Sql:
    """Finding dimensions describe the findings the cohort asked about, if it asked; else the
    findings that are there (an absent "Nodule" is no finding type of the study)."""
    if not cohort.findings:
        return Sql(f"{alias}.presence = ?", ["present"])
    predicates = [finding_predicate(f, alias) for f in cohort.findings]
    return Sql(
        "(" + " OR ".join(f"({p.text})" for p in predicates) + ")",
        [v for p in predicates for v in p.params],
    )


def _checked_on_measurement_row(cohort: Cohort, dimension: BinnedDimension) -> bool:
    """Whether the cohort's finding filter is one of a type and ranges of this very
    measurement only, so that a measurement row of the dimension can check it by itself."""
    if len(cohort.findings) != 1:
        return False
    only = cohort.findings[0]
    unit = canonical_unit(dimension.unit or "")
    return (
        only.site is None
        and only.algorithm is None
        and not only.qualitative
        and all(
            m.concept == dimension.concept and canonical_unit(m.unit) == unit
            for m in only.measurements
        )
    )


def _anchor_is_the_finding_filter(cohort: Cohort, dimensions: Sequence[Dimension]) -> bool:
    """Whether the join of the first measurement dimension (:func:`dimension_sql`'s anchor)
    asks exactly what the cohort's finding filter asks of a study: then a study has an
    anchor row if and only if it passes the filter, and the filter's own probe is redundant.

    Exactly one measurement filter on the finding (with two, the filter may be met by two
    measurement rows of one finding, the join by one row only), and no algorithm version
    (which the measurement row does not hold)."""
    anchor = next(
        (d for d in dimensions if isinstance(d, BinnedDimension) and d.of == "measurement"),
        None,
    )
    return (
        anchor is not None
        and _checked_on_measurement_row(cohort, anchor)
        and len(cohort.findings[0].measurements) == 1
        and cohort.findings[0].algorithm_version is None
    )


def facts_cover_cohort(cohort: Cohort, level: Level, dimensions: list[Dimension]) -> bool:
    """Whether every unit of the cohort has at least one row in :func:`facts_sql`: the fact
    rows then give the cohort's membership too, with no query of its own.

    True when the dimensions join nothing (sex, age, study year: one row per unit), or when
    their only join is a measurement anchor that asks what the cohort's finding filter asks
    (the sizes of the nodules of 8 mm or more, over a cohort with a nodule of 8 mm or more)."""
    joins = dimension_sql(cohort, level, dimensions).joins
    return not joins or (len(joins) == 1 and _anchor_is_the_finding_filter(cohort, dimensions))


def _measurement_restriction(cohort: Cohort, dimension: BinnedDimension, alias: str) -> Sql:
    """The restriction to the cohort's findings, on a measurement row ``alias``.

    Fast path: one finding filter of a type and ranges of this very measurement is checked on
    the (denormalised) measurement row itself; anything else looks up the finding.
    """
    if not cohort.findings:
        return Sql(f"{alias}.presence = ?", ["present"])
    only = cohort.findings[0]
    if _checked_on_measurement_row(cohort, dimension):
        typed = _measured_presence(only, alias)
        parts, params = [typed.text], list(typed.params)
        for measurement in only.measurements:
            condition = _measurement_condition(measurement, alias)
            parts.append(condition.text)
            params += condition.params
        return Sql(" AND ".join(parts) or "1 = 1", params)
    restriction = _finding_restriction(cohort, "fx")
    return Sql(
        f"EXISTS (SELECT 1 FROM findings fx WHERE fx.finding_key = {alias}.finding_key "
        f"AND {restriction.text})",
        restriction.params,
    )


def dimension_sql(cohort: Cohort, level: Level, dimensions: list[Dimension]) -> DimensionSql:
    """Joins placing each cohort row in cells. All finding-based dimensions of one question
    describe the same finding: the first measurement dimension (if any) is the anchor, joined
    by study through a covering index, and the others are joined to its finding."""
    joins: list[Sql] = []
    expressions: list[str] = []
    conditions: list[Sql] = []
    raw: list[str] = []
    anchor: str | None = None  # the alias whose finding_key the finding dimensions share

    measurement_dims = [
        d for d in dimensions if isinstance(d, BinnedDimension) and d.of == "measurement"
    ]
    measurement_alias: dict[int, str] = {}
    for number, measured in enumerate(measurement_dims):
        alias = f"md{number}"
        measurement_alias[id(measured)] = alias
        if anchor is None:
            restriction = _measurement_restriction(cohort, measured, alias)
            joins.append(
                Sql(
                    f"JOIN measurements {alias} ON {alias}.study_key = s.study_key "
                    f"AND {alias}.concept = ? AND {alias}.unit = ? AND {restriction.text}",
                    [measured.concept, canonical_unit(measured.unit or ""), *restriction.params],
                )
            )
            anchor = alias
        else:
            joins.append(
                Sql(
                    f"JOIN measurements {alias} ON {alias}.finding_key = {anchor}.finding_key "
                    f"AND {alias}.concept = ? AND {alias}.unit = ?",
                    [measured.concept, canonical_unit(measured.unit or "")],
                )
            )
    finding_alias: str | None = None

    def findings_join() -> str:
        nonlocal finding_alias
        if finding_alias is None:
            finding_alias = "fd"
            if anchor is not None:
                joins.append(Sql(f"JOIN findings fd ON fd.finding_key = {anchor}.finding_key"))
            else:
                restriction = _finding_restriction(cohort, "fd")
                joins.append(
                    Sql(
                        f"JOIN findings fd ON fd.study_key = s.study_key AND {restriction.text}",
                        restriction.params,
                    )
                )
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
                column = {
                    "finding_type": "finding_type",
                    "finding_site": "finding_site",
                    "algorithm": "algorithm_name",
                }[name]
                expressions.append(f"{alias}.{column}")
            else:  # qualitative
                alias = findings_join()
                q = f"qd{number}"
                joins.append(
                    Sql(
                        f"JOIN qualitative {q} ON {q}.finding_key = {alias}.finding_key "
                        f"AND {q}.concept = ?",
                        [dimension.concept],
                    )
                )
                expressions.append(f"{q}.value")
            raw.append(expressions[-1])
        else:
            if dimension.of == "age":
                value = "s.age_years"
            else:
                factor = canonical(1.0, dimension.unit or "")[0]
                value = f"({measurement_alias[id(dimension)]}.value / {float(factor)!r})"
            raw.append(value)
            # Bin index (0-based) of values inside [start, stop); -1 for values outside it
            # (or missing), which form a cell of their own: leaving them out would let the
            # total minus the bins give their number away.
            expressions.append(
                f"CASE WHEN {value} >= ? AND {value} < ? "
                f"THEN CAST(({value} - ?) / ? AS INTEGER) ELSE {OUTSIDE} END"
            )
    return DimensionSql(joins, expressions, conditions, raw)


def cells_sql(cohort: Cohort, level: Level, dimensions: list[Dimension]) -> Sql:
    """Per cell: the dimension values, distinct units and distinct patients, counted by the
    database itself. The answers count from :func:`facts_sql`'s rows (one query that also
    gives each patient's rows for noisy answers); this is the database's own COUNT(DISTINCT)
    of the same cells, which the tests hold them to."""
    where = cohort_where(cohort, level)
    dims = dimension_sql(cohort, level, dimensions)
    names = [f"d{i}" for i in range(len(dimensions))]
    select = ", ".join(f"{e} AS {n}" for e, n in zip(dims.expressions, names, strict=True))
    select_params: list[Any] = []
    for dimension in dimensions:
        if isinstance(dimension, BinnedDimension):
            select_params += [dimension.start, dimension.stop, dimension.start, dimension.width]
    join_text = " ".join(j.text for j in dims.joins)
    join_params = [p for j in dims.joins for p in j.params]
    conditions = [where, *dims.conditions]
    condition_text = " AND ".join(c.text for c in conditions)
    condition_params = [p for c in conditions for p in c.params]
    group = ", ".join(names)
    return Sql(
        f"SELECT {group}, COUNT(DISTINCT unit), COUNT(DISTINCT patient) FROM ("
        f"SELECT {select}, {UNIT_COLUMN[level]} AS unit, s.patient_key AS patient "
        f"FROM {base_from(level)} {join_text} WHERE {condition_text}) facts GROUP BY {group}",
        select_params + join_params + condition_params,
    )


def facts_sql(cohort: Cohort, level: Level, dimensions: list[Dimension]) -> Sql:
    """One row per (unit, patient (see :func:`unit_columns`), raw dimension values...) of the
    cohort: who is in which cell, from which a table's cells are counted.

    When the measurement anchor's join asks what the cohort's finding filter asks, the filter
    is left out: the join checks it already, and a second probe per study cost a third of the
    query."""
    where = cohort_where(
        cohort, level, findings=not _anchor_is_the_finding_filter(cohort, dimensions)
    )
    dims = dimension_sql(cohort, level, dimensions)
    join_text = " ".join(j.text for j in dims.joins)
    join_params = [p for j in dims.joins for p in j.params]
    conditions = [where, *dims.conditions]
    return Sql(
        f"SELECT {unit_columns(level)}, {', '.join(dims.raw)} "
        f"FROM {base_from(level)} {join_text} WHERE {' AND '.join(c.text for c in conditions)}",
        join_params + [p for c in conditions for p in c.params],
    )


def values_sql(cohort: Cohort, level: Level, dimension: BinnedDimension) -> Sql:
    """The numeric values behind a summary, one per unit (per finding for measurements)."""
    where = cohort_where(cohort, level)
    dims = dimension_sql(cohort, level, [dimension])
    raw = dims.raw[0]
    join_text = " ".join(j.text for j in dims.joins)
    join_params = [p for j in dims.joins for p in j.params]
    unit = "md0.finding_key" if dimension.of == "measurement" else UNIT_COLUMN[level]
    return Sql(
        f"SELECT DISTINCT {unit}, s.patient_key, {raw} FROM {base_from(level)} {join_text} "
        f"WHERE {where.text} AND {raw} IS NOT NULL",
        join_params + where.params,
    )


#: Per vocabulary list (:mod:`.vocabulary`): the join from the study ``s`` to the rows
#: holding its values (alias ``v``), the value columns, and which rows count. Findings count
#: only when the report says they are there; a "clinical" list is the measurements or
#: qualitative values of findings without a type (clinical-information reports, LN 55752-0).
_PRESENT_TYPED = "v.presence = 'present' AND v.finding_type IS NOT NULL"
_PRESENT_UNTYPED = "v.presence = 'present' AND v.finding_type IS NULL"
_QUALITATIVE = (
    "JOIN findings vf ON vf.study_key = s.study_key "
    "JOIN qualitative v ON v.finding_key = vf.finding_key"
)
VOCABULARY_SOURCES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "modality": ("JOIN series v ON v.study_key = s.study_key", ("v.modality",), "1 = 1"),
    "body_part": ("JOIN series v ON v.study_key = s.study_key", ("v.body_part",), "1 = 1"),
    "manufacturer": ("JOIN series v ON v.study_key = s.study_key", ("v.manufacturer",), "1 = 1"),
    "finding_type": (
        "JOIN findings v ON v.study_key = s.study_key",
        ("v.finding_type",),
        _PRESENT_TYPED,
    ),
    "finding_site": (
        "JOIN findings v ON v.study_key = s.study_key",
        ("v.finding_site",),
        "v.presence = 'present'",
    ),
    # An algorithm that ran and found nothing is an algorithm the site has: any presence.
    "algorithm": (
        "JOIN findings v ON v.study_key = s.study_key",
        ("v.algorithm_name", "v.algorithm_version"),
        "1 = 1",
    ),
    "measurement": (
        "JOIN measurements v ON v.study_key = s.study_key",
        ("v.concept", "v.unit"),
        _PRESENT_TYPED,
    ),
    "qualitative": (
        _QUALITATIVE,
        ("v.concept", "v.value"),
        _PRESENT_TYPED.replace("v.", "vf."),
    ),
    "clinical_measurement": (
        "JOIN measurements v ON v.study_key = s.study_key",
        ("v.concept", "v.unit"),
        _PRESENT_UNTYPED,
    ),
    "clinical_qualitative": (
        _QUALITATIVE,
        ("v.concept", "v.value"),
        _PRESENT_UNTYPED.replace("v.", "vf."),
    ),
}


def vocabulary_sql(cohort: Cohort, name: str) -> Sql:
    """The distinct (patient, value columns...) of one vocabulary list over the cohort's
    studies: who holds which value (rows with a missing value are left out)."""
    join, columns, condition = VOCABULARY_SOURCES[name]
    where = cohort_where(cohort, "patients")
    present = " AND ".join(f"{column} IS NOT NULL" for column in columns)
    return Sql(
        f"SELECT DISTINCT s.patient_key, {', '.join(columns)} FROM studies s {join} "
        f"WHERE {where.text} AND {condition} AND {present}",
        where.params,
    )
