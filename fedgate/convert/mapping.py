"""The mapping file: which coded concept each column of a clinical table stands for.

JSON (or YAML, by suffix ``.yaml``/``.yml``)::

    {
      "columns": {
        "lvef": {
          "concept": {"scheme": "LN", "code": "10230-1", "meaning": "LV ejection fraction"},
          "unit": {"code": "%", "meaning": "percent"}
        },
        "smoking": {
          "concept": {"scheme": "SCT", "code": "365981007", "meaning": "Tobacco smoking behavior"},
          "values": {
            "never":  {"scheme": "SCT", "code": "266919005", "meaning": "Never smoked tobacco"},
            "former": {"scheme": "SCT", "code": "8517006", "meaning": "Ex-smoker"}
          }
        }
      },
      "ignore": ["comment"]
    }

A column with a ``unit`` (a UCUM code, or ``{"code", "meaning"}``) is numeric; a column with
``values`` is coded, its cells must be one of the keys. ``ignore`` names columns that are dropped
on purpose; any other column that is neither mapped nor a patient/study attribute
(:data:`IDENTITY_COLUMNS`) is unknown, and a row with a value in it is skipped rather than
silently losing that value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydicom.sr.coding import Code

from fedgate.convert.problems import ConversionError

#: Columns that set the Patient/General Study attributes instead of becoming SR content.
IDENTITY_COLUMNS = (
    "PatientID",
    "StudyInstanceUID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "AccessionNumber",
)

# UCUM codes are printable ASCII without spaces; [] and {} pair up ("mm[Hg]", "{beats}/min").
_UCUM_CHARS = re.compile(r"^[!-~]+$")


@dataclass(frozen=True)
class NumericColumn:
    name: str
    concept: Code
    unit: Code


@dataclass(frozen=True)
class CodedColumn:
    name: str
    concept: Code
    values: dict[str, Code]

    def lookup(self, cell: str) -> Code | None:
        """The code of a cell: the exact key, else the one key equal ignoring case."""
        if cell in self.values:
            return self.values[cell]
        folded = [key for key in self.values if key.casefold() == cell.casefold()]
        return self.values[folded[0]] if len(folded) == 1 else None


Column = NumericColumn | CodedColumn


@dataclass(frozen=True)
class Mapping:
    columns: dict[str, Column]
    ignored: frozenset[str]

    def is_known(self, column: str) -> bool:
        return column in self.columns or column in self.ignored or column in IDENTITY_COLUMNS


def load_mapping(path: Path) -> Mapping:
    """Read and check a mapping file; :class:`ConversionError` names what is wrong and where."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConversionError(f"{path}: cannot read the mapping file: {error.strerror}") from None
    try:
        if path.suffix.lower() in {".yaml", ".yml"}:
            document = yaml.safe_load(text)
        else:
            document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConversionError(f"{path}:{error.lineno}: not valid JSON: {error.msg}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConversionError(f"{path}{line}: not valid YAML: {error}") from None
    return parse_mapping(document, str(path))


def parse_mapping(document: Any, source: str = "mapping") -> Mapping:
    if not isinstance(document, dict) or not isinstance(document.get("columns"), dict):
        raise ConversionError(f"{source}: expected an object with a 'columns' object")
    unknown_keys = set(document) - {"columns", "ignore"}
    if unknown_keys:
        raise ConversionError(f"{source}: unknown top-level keys {sorted(unknown_keys)}")
    columns: dict[str, Column] = {}
    for name, spec in document["columns"].items():
        where = f"{source}: columns.{name}"
        if name in IDENTITY_COLUMNS:
            raise ConversionError(f"{where}: {name} is a patient/study attribute, not a value")
        columns[name] = _column(name, spec, where)
    ignored = document.get("ignore", [])
    if not isinstance(ignored, list) or not all(isinstance(c, str) for c in ignored):
        raise ConversionError(f"{source}: 'ignore' must be a list of column names")
    return Mapping(columns=columns, ignored=frozenset(ignored))


def _column(name: str, spec: Any, where: str) -> Column:
    if not isinstance(spec, dict):
        raise ConversionError(f"{where}: expected an object with 'concept' and 'unit' or 'values'")
    unknown_keys = set(spec) - {"concept", "unit", "values"}
    if unknown_keys:
        raise ConversionError(f"{where}: unknown keys {sorted(unknown_keys)}")
    concept = _code(spec.get("concept"), f"{where}.concept")
    if ("unit" in spec) == ("values" in spec):
        raise ConversionError(f"{where}: give exactly one of 'unit' (numeric) or 'values' (coded)")
    if "unit" in spec:
        return NumericColumn(name=name, concept=concept, unit=_unit(spec["unit"], f"{where}.unit"))
    values = spec["values"]
    if not isinstance(values, dict) or not values:
        raise ConversionError(f"{where}.values: expected an object mapping cell text to codes")
    return CodedColumn(
        name=name,
        concept=concept,
        values={str(key): _code(code, f"{where}.values.{key}") for key, code in values.items()},
    )


def _code(spec: Any, where: str) -> Code:
    if not isinstance(spec, dict):
        raise ConversionError(f"{where}: expected {{'scheme', 'code', 'meaning'}}")
    missing = [key for key in ("scheme", "code", "meaning") if not str(spec.get(key, "")).strip()]
    if missing:
        raise ConversionError(f"{where}: missing {', '.join(missing)}")
    return Code(str(spec["code"]).strip(), str(spec["scheme"]).strip(), str(spec["meaning"]))


def _unit(spec: Any, where: str) -> Code:
    if isinstance(spec, str):
        code, meaning = spec, spec
    elif isinstance(spec, dict) and isinstance(spec.get("code"), str):
        code, meaning = spec["code"], str(spec.get("meaning") or spec["code"])
    else:
        raise ConversionError(f"{where}: expected a UCUM code or {{'code', 'meaning'}}")
    if not is_ucum_syntax(code):
        raise ConversionError(f"{where}: {code!r} is not a UCUM unit code")
    return Code(code, "UCUM", meaning)


def is_ucum_syntax(code: str) -> bool:
    """A light check of UCUM syntax: printable ASCII, no spaces, balanced [] and {}."""
    if not _UCUM_CHARS.match(code):
        return False
    depth = {"[": 0, "{": 0}
    closing = {"]": "[", "}": "{"}
    for char in code:
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            if depth[closing[char]] < 0:
                return False
    return all(count == 0 for count in depth.values())
