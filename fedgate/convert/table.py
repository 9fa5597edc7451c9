"""Rows of a clinical table (CSV, JSON or JSON Lines), each with the line it starts on.

- CSV (``.csv``, ``.tsv``, or any other suffix): a header row of column names; comma, semicolon
  or tab separated (as spreadsheets export them); UTF-8, with or without a byte-order mark.
- JSON (``.json``): an array of objects, one per row.
- JSON Lines (``.jsonl``, ``.ndjson``): one object per line.

Line numbers are those a text editor shows, so a problem report can be acted on.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgate.convert.problems import ConversionError


@dataclass(frozen=True)
class Row:
    """One input row: its cells by column name (str for CSV, JSON values for JSON)."""

    line: int
    cells: dict[str, Any]
    #: Cells that belong to no column (a CSV row longer than its header): never dropped silently.
    stray_cells: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Table:
    source: str
    columns: list[str]
    rows: list[Row]


def read_table(path: Path) -> Table:
    """Read a CSV/JSON/JSON Lines table; :class:`ConversionError` for an unreadable file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConversionError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise ConversionError(f"{path}: cannot read: {error.strerror}") from None
    suffix = path.suffix.lower()
    if suffix == ".json":
        rows = list(_json_rows(text, str(path)))
    elif suffix in {".jsonl", ".ndjson"}:
        rows = list(_json_lines_rows(text, str(path)))
    else:
        return _csv_table(text, str(path))
    columns: list[str] = []
    for row in rows:
        columns.extend(name for name in row.cells if name not in columns)
    return Table(source=str(path), columns=columns, rows=rows)


def _csv_table(text: str, source: str) -> Table:
    lines = text.splitlines(keepends=True)
    if not lines or not lines[0].strip():
        raise ConversionError(f"{source}:1: the header row (column names) is missing")
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(lines[0], ",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(lines, dialect)
    try:
        header = [name.strip() for name in next(reader)]
    except csv.Error as error:
        raise ConversionError(f"{source}:1: unreadable header: {error}") from None
    empty = [str(index + 1) for index, name in enumerate(header) if not name]
    if empty:
        raise ConversionError(f"{source}:1: header column(s) {', '.join(empty)} have no name")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise ConversionError(f"{source}:1: duplicate column name(s) {duplicates}")
    rows: list[Row] = []
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise ConversionError(f"{source}:{start}: malformed CSV: {error}") from None
        if any(cell.strip() for cell in cells):
            stray = [cell for cell in cells[len(header) :] if cell.strip()]
            named = dict(zip(header, cells, strict=False))
            rows.append(Row(line=start, cells=named, stray_cells=stray))
        start = reader.line_num + 1
    return Table(source=source, columns=header, rows=rows)


def _json_rows(text: str, source: str) -> Iterator[Row]:
    decoder = json.JSONDecoder()
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConversionError(f"{source}:{error.lineno}: not valid JSON: {error.msg}") from None
    if not isinstance(document, list):
        raise ConversionError(f"{source}:1: expected an array of row objects")
    start = text.index("[")
    # Decode the array one element at a time to learn the line each row starts on.
    position = start + 1
    while True:
        position = _skip(text, position, " \t\r\n,")
        if text[position] == "]":
            return
        line = text.count("\n", 0, position) + 1
        value, position = decoder.raw_decode(text, position)
        if not isinstance(value, dict):
            kind = type(value).__name__
            raise ConversionError(f"{source}:{line}: expected a row object, got {kind}")
        yield Row(line=line, cells=value)


def _json_lines_rows(text: str, source: str) -> Iterator[Row]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConversionError(f"{source}:{number}: not valid JSON: {error.msg}") from None
        if not isinstance(value, dict):
            raise ConversionError(f"{source}:{number}: expected a row object")
        yield Row(line=number, cells=value)


def _skip(text: str, position: int, characters: str) -> int:
    while position < len(text) and text[position] in characters:
        position += 1
    return position
