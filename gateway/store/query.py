"""QIDO-RS matching over the catalog (PS3.18 8.3.4 and PS3.4 C.2.2.2 attribute matching).

Supported matching, by value representation:
- UI: single value or a list separated by ``,`` or ``\\`` (List of UID Matching);
- DA, TM: single value or range ``a-b``, ``a-``, ``-b`` (Range Matching);
- PN: wildcard matching with ``*`` and ``?``, case-insensitive (as Orthanc's default);
- CS, SH, LO: exact (Single Value Matching), ``*``/``?`` wildcards, or a ``,`` list for CS;
- IS, US: exact.
An empty value is Universal Matching: it matches everything and asks for the attribute back.

Attributes of a lower level than the one queried (e.g. ``Modality`` on ``/studies``) match
relationally: a study matches when any of its series does.
"""

from __future__ import annotations

import enum
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from gateway.numbers import DATABASE_INTEGER_MAX, clamp_to_database
from gateway.store.catalog import Catalog


class QueryLevel(enum.Enum):
    STUDY = "studies"
    SERIES = "series"
    INSTANCE = "instances"


@dataclass(frozen=True)
class Attribute:
    """An attribute the catalog can match on: its level, table column and VR."""

    keyword: str
    tag: str  # 8 hex digits, as in DICOM JSON
    vr: str
    level: QueryLevel
    column: str


_TABLE_ALIAS = {QueryLevel.STUDY: "s", QueryLevel.SERIES: "se", QueryLevel.INSTANCE: "i"}
_TABLE = {
    QueryLevel.STUDY: "studies",
    QueryLevel.SERIES: "series",
    QueryLevel.INSTANCE: "instances",
}
_KEY = {
    QueryLevel.STUDY: "study_instance_uid",
    QueryLevel.SERIES: "series_instance_uid",
    QueryLevel.INSTANCE: "sop_instance_uid",
}

_ATTRIBUTES = [
    Attribute("StudyInstanceUID", "0020000D", "UI", QueryLevel.STUDY, "study_instance_uid"),
    Attribute("PatientID", "00100020", "LO", QueryLevel.STUDY, "patient_id"),
    Attribute("PatientName", "00100010", "PN", QueryLevel.STUDY, "patient_name"),
    Attribute("PatientBirthDate", "00100030", "DA", QueryLevel.STUDY, "patient_birth_date"),
    Attribute("PatientSex", "00100040", "CS", QueryLevel.STUDY, "patient_sex"),
    Attribute("StudyDate", "00080020", "DA", QueryLevel.STUDY, "study_date"),
    Attribute("StudyTime", "00080030", "TM", QueryLevel.STUDY, "study_time"),
    Attribute("AccessionNumber", "00080050", "SH", QueryLevel.STUDY, "accession_number"),
    Attribute("StudyID", "00200010", "SH", QueryLevel.STUDY, "study_id"),
    Attribute("StudyDescription", "00081030", "LO", QueryLevel.STUDY, "study_description"),
    Attribute(
        "ReferringPhysicianName", "00080090", "PN", QueryLevel.STUDY, "referring_physician_name"
    ),
    Attribute("SeriesInstanceUID", "0020000E", "UI", QueryLevel.SERIES, "series_instance_uid"),
    Attribute("Modality", "00080060", "CS", QueryLevel.SERIES, "modality"),
    Attribute("SeriesNumber", "00200011", "IS", QueryLevel.SERIES, "series_number"),
    Attribute("SeriesDescription", "0008103E", "LO", QueryLevel.SERIES, "series_description"),
    Attribute("BodyPartExamined", "00180015", "CS", QueryLevel.SERIES, "body_part_examined"),
    Attribute(
        "PerformedProcedureStepStartDate",
        "00400244",
        "DA",
        QueryLevel.SERIES,
        "performed_procedure_step_start_date",
    ),
    Attribute(
        "PerformedProcedureStepStartTime",
        "00400245",
        "TM",
        QueryLevel.SERIES,
        "performed_procedure_step_start_time",
    ),
    Attribute("SOPInstanceUID", "00080018", "UI", QueryLevel.INSTANCE, "sop_instance_uid"),
    Attribute("SOPClassUID", "00080016", "UI", QueryLevel.INSTANCE, "sop_class_uid"),
    Attribute("InstanceNumber", "00200013", "IS", QueryLevel.INSTANCE, "instance_number"),
    Attribute("Rows", "00280010", "US", QueryLevel.INSTANCE, "rows"),
    Attribute("Columns", "00280011", "US", QueryLevel.INSTANCE, "columns"),
    Attribute("BitsAllocated", "00280100", "US", QueryLevel.INSTANCE, "bits_allocated"),
    Attribute("NumberOfFrames", "00280008", "IS", QueryLevel.INSTANCE, "number_of_frames"),
]
ATTRIBUTES: dict[str, Attribute] = {attribute.keyword: attribute for attribute in _ATTRIBUTES}
ATTRIBUTES_BY_TAG: dict[str, Attribute] = {attribute.tag: attribute for attribute in _ATTRIBUTES}

#: ModalitiesInStudy (0008,0061) matches the modalities of a study's series.
MODALITIES_IN_STUDY = "ModalitiesInStudy"
#: SOPClassesInStudy (0008,0062) likewise for SOP classes.
SOP_CLASSES_IN_STUDY = "SOPClassesInStudy"


class QueryError(ValueError):
    """A query the catalog cannot answer (a 400 naming the attribute)."""


@dataclass
class Query:
    """A QIDO-RS search at one level, with matching keys by keyword."""

    level: QueryLevel
    matches: dict[str, str] = field(default_factory=dict)
    study_instance_uid: str | None = None  # from the URL path
    series_instance_uid: str | None = None  # from the URL path
    limit: int | None = None
    offset: int = 0


def search(catalog: Catalog, query: Query) -> list[dict[str, Any]]:
    """Rows (column name -> value) of the entities at ``query.level`` that match."""
    return [dict(row) for row in search_rows(catalog, query)]


def search_rows(catalog: Catalog, query: Query) -> list[sqlite3.Row]:
    """:func:`search`'s rows as SQLite gives them (no dict per row: a 500-instance study's
    answer is built from them in milliseconds). A column name that occurs twice (the levels'
    tables share their keys) means its last occurrence, as in :func:`search`."""
    sql, params = build_sql(query)
    return catalog.query(sql, params)


def build_sql(query: Query) -> tuple[str, list[Any]]:
    level = query.level
    where: list[str] = []
    params: list[Any] = []
    if query.study_instance_uid:
        where.append("s.study_instance_uid = ?")
        params.append(query.study_instance_uid)
    if query.series_instance_uid:
        where.append("se.series_instance_uid = ?")
        params.append(query.series_instance_uid)
    lower: dict[QueryLevel, list[tuple[str, list[Any]]]] = {}
    for keyword, value in query.matches.items():
        if value == "":
            continue  # Universal Matching
        if keyword in (MODALITIES_IN_STUDY, SOP_CLASSES_IN_STUDY):
            target = ATTRIBUTES["Modality" if keyword == MODALITIES_IN_STUDY else "SOPClassUID"]
            condition, values = _condition(target, value)
            lower.setdefault(target.level, []).append((condition, values))
            continue
        attribute = ATTRIBUTES.get(keyword)
        if attribute is None:
            raise QueryError(f"matching on {keyword} is not supported")
        condition, values = _condition(attribute, value)
        if _depth(attribute.level) <= _depth(level):
            where.append(condition)
            params.extend(values)
        else:
            lower.setdefault(attribute.level, []).append((condition, values))
    for lower_level, conditions in sorted(lower.items(), key=lambda item: _depth(item[0])):
        if _depth(lower_level) <= _depth(level):
            # e.g. ModalitiesInStudy on /series: the series' own study must have one.
            for condition, values in conditions:
                where.append(_exists_in_study(lower_level, condition))
                params.extend(values)
            continue
        combined = " AND ".join(condition for condition, _ in conditions)
        where.append(_exists_below(level, lower_level, combined))
        for _, values in conditions:
            params.extend(values)

    select, joins, order = _select(level)
    paged = query.limit is not None or query.offset
    if paged:
        limit = clamp_to_database(query.limit) if query.limit is not None else -1
        params.extend([limit, clamp_to_database(query.offset)])
    if level is QueryLevel.STUDY and paged:
        # The page's studies first, by their keys alone, then their attributes and counts:
        # SQLite would otherwise compute the per-study counts of every study the OFFSET
        # skips (23 s for the last page of 1,000,000 studies), and the index in this order
        # (studies_in_order) makes the skipping a walk of the index.
        page = "SELECT s.study_instance_uid FROM studies s"
        if where:
            page += " WHERE " + " AND ".join(where)
        page += f" ORDER BY {order} LIMIT ? OFFSET ?"
        sql = (
            f"SELECT {select} FROM ({page}) page JOIN studies s "
            f"ON s.study_instance_uid = page.study_instance_uid ORDER BY {order}"
        )
        return sql, params
    sql = f"SELECT {select} FROM {joins}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {order}"
    if paged:
        sql += " LIMIT ? OFFSET ?"
    return sql, params


def _depth(level: QueryLevel) -> int:
    return [QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.INSTANCE].index(level)


def _select(level: QueryLevel) -> tuple[str, str, str]:
    if level is QueryLevel.STUDY:
        select = (
            "s.*, (SELECT group_concat(DISTINCT m.modality) FROM series m "
            "WHERE m.study_instance_uid = s.study_instance_uid) AS modalities_in_study, "
            "(SELECT count(*) FROM series c WHERE c.study_instance_uid = s.study_instance_uid)"
            " AS number_of_study_related_series, "
            "(SELECT count(*) FROM instances c WHERE c.study_instance_uid = s.study_instance_uid)"
            " AS number_of_study_related_instances"
        )
        return select, "studies s", "s.study_date, s.study_time, s.study_instance_uid"
    if level is QueryLevel.SERIES:
        select = (
            "s.*, se.*, (SELECT count(*) FROM instances c "
            "WHERE c.series_instance_uid = se.series_instance_uid)"
            " AS number_of_series_related_instances"
        )
        joins = "series se JOIN studies s ON s.study_instance_uid = se.study_instance_uid"
        return select, joins, "s.study_instance_uid, se.series_number, se.series_instance_uid"
    joins = (
        "instances i JOIN series se ON se.series_instance_uid = i.series_instance_uid "
        "JOIN studies s ON s.study_instance_uid = se.study_instance_uid"
    )
    order = "se.series_instance_uid, i.instance_number, i.sop_instance_uid"
    return "s.*, se.*, i.*", joins, order


def _exists_below(level: QueryLevel, lower_level: QueryLevel, condition: str) -> str:
    alias = _TABLE_ALIAS[lower_level]
    key = _KEY[level]
    parent = _TABLE_ALIAS[level]
    return (
        f"EXISTS (SELECT 1 FROM {_TABLE[lower_level]} {alias} "
        f"WHERE {alias}.{key} = {parent}.{key} AND {condition})"
    )


def _exists_in_study(lower_level: QueryLevel, condition: str) -> str:
    alias = _TABLE_ALIAS[lower_level]
    return (
        f"EXISTS (SELECT 1 FROM {_TABLE[lower_level]} {alias} "
        f"WHERE {alias}.study_instance_uid = s.study_instance_uid AND {condition})"
    )


def _condition(attribute: Attribute, value: str) -> tuple[str, list[Any]]:
    column = f"{_TABLE_ALIAS[attribute.level]}.{attribute.column}"
    vr = attribute.vr
    if vr == "UI" or (vr == "CS" and ("," in value or "\\" in value)):
        values = [v.strip() for v in value.replace("\\", ",").split(",") if v.strip()]
        if not values:
            raise QueryError(f"{attribute.keyword}: empty value list")
        return f"{column} IN ({','.join('?' * len(values))})", values
    if vr in ("DA", "TM", "DT"):
        return _range(attribute, column, value)
    if vr in ("IS", "US"):
        try:
            number = int(value)
        except ValueError:
            raise QueryError(f"{attribute.keyword}: {value!r} is not an integer") from None
        # IS is at most 12 characters (PS3.5 6.2): a larger number matches nothing stored, and
        # SQLite cannot bind one of 2**63 or more.
        if abs(number) > DATABASE_INTEGER_MAX:
            return "0", []
        return f"{column} = ?", [number]
    if vr == "PN" or "*" in value or "?" in value:
        pattern = (
            value.replace("\\", "\\\\")
            .replace("%", "\\%")
            .replace("_", "\\_")
            .replace("*", "%")
            .replace("?", "_")
        )
        return f"{column} LIKE ? ESCAPE '\\'", [pattern]
    return f"{column} = ?", [value]


def _range(attribute: Attribute, column: str, value: str) -> tuple[str, list[Any]]:
    digits = 8 if attribute.vr == "DA" else None
    if "-" not in value:
        _check_temporal(attribute, value, digits)
        return f"{column} = ?", [value]
    start, _, end = value.partition("-")
    start, end = start.strip(), end.strip()
    if not start and not end:
        raise QueryError(f"{attribute.keyword}: a range needs at least one end")
    conditions, params = [], []
    if start:
        _check_temporal(attribute, start, digits)
        conditions.append(f"{column} >= ?")
        params.append(start)
    if end:
        _check_temporal(attribute, end, digits)
        conditions.append(f"{column} <= ?")
        # A time range end like 1200 includes 120059.999: compare against its upper bound.
        params.append(end if attribute.vr == "DA" else end + "\uffff")
    return "(" + " AND ".join(conditions) + ")", params


def _check_temporal(attribute: Attribute, value: str, digits: int | None) -> None:
    bare = value.replace(".", "").replace(":", "")
    if not bare.isdigit() or (digits is not None and len(bare) != digits):
        expected = "YYYYMMDD" if attribute.vr == "DA" else "HHMMSS"
        raise QueryError(f"{attribute.keyword}: {value!r} is not a {expected} value or range")
