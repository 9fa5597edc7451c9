"""QIDO-RS results (PS3.18 10.6.3) encoded as DICOM JSON text straight from the catalog's rows.

Building one dict per result and one per attribute, then ``json.dumps`` of the lot, cost about
0.2 ms per result: 117 ms for a 500-instance study (issue 19). Here the attributes a request
returns are worked out once per request (an *encoding plan*: tag order, where each value comes
from), and each result is written as text, attribute by attribute, with the JSON encoder's own
string escaping. The text is exactly what ``json.dumps(results, separators=(",", ":"))`` gives
for the results of :func:`gateway.dicomweb.qido.build_result` (``tests/gateway/test_qido_json.py``
holds it to that): values of a type the fast writers do not know take the general way.

Only results made from the catalog alone are written here; a request whose attributes are read
from a file (``includefield=all``, or an attribute that is not a catalog column) is answered the
general way. Attributes of the levels above the one searched (a series' and its study's, for
each of its 500 instances) are written once per series or study and reused.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any

from gateway.dicomweb.json_model import element, person_name
from gateway.store.query import ATTRIBUTES, MODALITIES_IN_STUDY, SOP_CLASSES_IN_STUDY, QueryLevel

#: One attribute's value of a result, as JSON text, from its row.
_Writer = Callable[[sqlite3.Row], str]


def _dumps(value: Any) -> str:
    # As json_model.json_response encodes (ensure_ascii stays on, as there).
    return json.dumps(value, separators=(",", ":"))


def _column_writer(vr: str, index: int) -> _Writer:
    """``element(vr, value)`` or, for PN, ``person_name(value)`` of one column, as text."""
    if vr == "PN":
        empty = _dumps(person_name(None))

        def write_name(row: sqlite3.Row) -> str:
            value = row[index]
            if type(value) is str and value:
                return '{"vr":"PN","Value":[{"Alphabetic":' + encode_basestring_ascii(value) + "}]}"
            return _dumps(person_name(value)) if value else empty

        return write_name
    empty = _dumps(element(vr))
    head = '{"vr":"' + vr + '","Value":['

    def write(row: sqlite3.Row) -> str:
        value = row[index]
        kind = type(value)
        if kind is str:
            return head + encode_basestring_ascii(value) + "]}" if value else empty
        if kind is int:
            return head + int.__repr__(value) + "]}"
        if value is None:
            return empty
        return _dumps(element(vr, value))  # REAL or BLOB in a column: the general way

    return write


def _modalities_writer(index: int | None) -> _Writer:
    def write(row: sqlite3.Row) -> str:
        modalities = row[index] if index is not None else None
        return _dumps(element("CS", *(modalities.split(",") if modalities else [])))

    return write


def _retrieve_url_writer(level: QueryLevel, base: str, columns: dict[str, int]) -> _Writer:
    """RetrieveURL (0008,1190) of the result (PS3.18 10.6.3.3)."""
    study = columns["study_instance_uid"]
    series = columns.get("series_instance_uid")
    instance = columns.get("sop_instance_uid")
    head = '{"vr":"UR","Value":['

    def write(row: sqlite3.Row) -> str:
        url = f"{base}/studies/{row[study]}"
        if level is not QueryLevel.STUDY:
            assert series is not None
            url += f"/series/{row[series]}"
        if level is QueryLevel.INSTANCE:
            assert instance is not None
            url += f"/instances/{row[instance]}"
        return head + encode_basestring_ascii(url) + "]}"

    return write


@dataclass(frozen=True)
class Plan:
    """How every result of one request is written: ``steps`` in tag order, each either an
    attribute of the result's own level (its name and writer) or, as text kept per parent, a
    run of consecutive attributes of the levels above (the same for every instance of a
    series, every series of a study: written once per parent, ``parent_key`` its column)."""

    steps: list[tuple[str, _Writer | None, int]]  # (name, writer, run) ; writer None: run
    runs: list[list[tuple[str, _Writer]]]
    parent_key: int | None


def plan(
    level: QueryLevel,
    include: Sequence[str],
    columns: dict[str, int],
    fields: Sequence[str],
    tag_of: Callable[[str], str],
    base: str,
) -> Plan | None:
    """The attributes of every result of this request, in tag order, each with its writer;
    None when some attribute must be read from a file (then the caller builds the results).

    ``fields`` are the keywords returned by default at ``level`` (its parents' first),
    ``columns`` the row's column positions by name (the last of a repeated name), ``base``
    the request's DICOMweb root (for RetrieveURL).
    """
    if "all" in include:
        return None
    writers: dict[str, tuple[_Writer, bool]] = {}  # tag -> (writer, from a parent level)

    def add(keyword: str) -> bool:
        """A writer for ``keyword``'s catalog value; False if the catalog has none."""
        if keyword == MODALITIES_IN_STUDY:
            # A study's own attribute; on /series and /instances the rows have no such
            # column and the attribute is empty for every result.
            index = columns.get("modalities_in_study")
            writers[tag_of(keyword)] = (_modalities_writer(index), index is None)
            return True
        attribute = ATTRIBUTES.get(keyword)
        if attribute is None or attribute.column not in columns:
            return False
        writer = _column_writer(attribute.vr, columns[attribute.column])
        writers[tag_of(keyword)] = (writer, _DEPTH[attribute.level] < _DEPTH[level])
        return True

    for keyword in fields:
        add(keyword)
    if level is QueryLevel.STUDY:
        writers["00080061"] = (_modalities_writer(columns.get("modalities_in_study")), False)
        for tag, column in (
            ("00201206", "number_of_study_related_series"),
            ("00201208", "number_of_study_related_instances"),
        ):
            writers[tag] = (_column_writer("IS", columns[column]), False)
    elif level is QueryLevel.SERIES:
        count = columns["number_of_series_related_instances"]
        writers["00201209"] = (_column_writer("IS", count), False)
    writers["00081190"] = (_retrieve_url_writer(level, base, columns), False)
    for keyword in include:
        if keyword == "all" or tag_of(keyword) in writers:
            continue
        if not add(keyword) and keyword != SOP_CLASSES_IN_STUDY:
            return None  # not a catalog column: read from a file
    steps: list[tuple[str, _Writer | None, int]] = []
    runs: list[list[tuple[str, _Writer]]] = []
    previous_from_parent = False
    for tag, (writer, from_parent) in sorted(writers.items()):
        name = '"' + tag + '":'
        if not from_parent:
            steps.append((name, writer, -1))
        elif previous_from_parent:
            runs[-1].append((name, writer))
        else:
            runs.append([(name, writer)])
            steps.append(("", None, len(runs) - 1))
        previous_from_parent = from_parent
    parent_key = None
    if level is not QueryLevel.STUDY:
        parent = "series_instance_uid" if level is QueryLevel.INSTANCE else "study_instance_uid"
        parent_key = columns[parent]
    return Plan(steps, runs, parent_key)


def encode(rows: Sequence[sqlite3.Row], plan: Plan) -> str:
    """The JSON array of the results written as :func:`plan` says."""
    steps, runs, parent_key = plan.steps, plan.runs, plan.parent_key
    parents: dict[Any, list[str]] = {}
    results = []
    for row in rows:
        written = parents.get(row[parent_key]) if parent_key is not None else None
        if written is None:
            written = [",".join(name + write(row) for name, write in run) for run in runs]
            if parent_key is not None:
                parents[row[parent_key]] = written
        results.append(
            "{"
            + ",".join(
                name + write(row) if write is not None else written[run]
                for name, write, run in steps
            )
            + "}"
        )
    return "[" + ",".join(results) + "]"


_DEPTH = {QueryLevel.STUDY: 0, QueryLevel.SERIES: 1, QueryLevel.INSTANCE: 2}


def column_positions(row: sqlite3.Row) -> dict[str, int]:
    """Each column's position in ``row``; a repeated name keeps its last, as ``dict(row)``."""
    return {name: position for position, name in enumerate(row.keys())}
