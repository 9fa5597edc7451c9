"""UCUM unit conversion, where it is simple: lengths, areas, volumes and plain ratios.

Measurements are stored in one canonical unit per dimension (mm, mm2, mm3), so that a
cohort asking for "diameter over 0.8 cm" matches a finding recorded as 9 mm. Units outside
these tables (e.g. ``[hnsf'U]`` for Hounsfield units) are kept as they are and match only
themselves.
"""

from __future__ import annotations

#: UCUM code -> (canonical UCUM code, factor to multiply by).
_CONVERSIONS: dict[str, tuple[str, float]] = {
    "um": ("mm", 1e-3),
    "mm": ("mm", 1.0),
    "cm": ("mm", 10.0),
    "m": ("mm", 1000.0),
    "mm2": ("mm2", 1.0),
    "cm2": ("mm2", 100.0),
    "m2": ("mm2", 1e6),
    "mm3": ("mm3", 1.0),
    "cm3": ("mm3", 1000.0),
    "mL": ("mm3", 1000.0),
    "ml": ("mm3", 1000.0),
    "L": ("mm3", 1e6),
    "l": ("mm3", 1e6),
    "m3": ("mm3", 1e9),
    "%": ("%", 1.0),
    "1": ("1", 1.0),
}


class UnitError(ValueError):
    """Two units that cannot be converted into each other."""


def canonical(value: float, unit: str) -> tuple[float, str]:
    """``value`` in ``unit`` expressed in the canonical unit of its dimension."""
    canonical_unit, factor = _CONVERSIONS.get(unit, (unit, 1.0))
    return value * factor, canonical_unit


def canonical_unit(unit: str) -> str:
    return _CONVERSIONS.get(unit, (unit, 1.0))[0]


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """``value`` converted between two units of one dimension, or UnitError."""
    amount, unit = canonical(value, from_unit)
    target, target_unit = canonical(1.0, to_unit)
    if unit != target_unit:
        raise UnitError(f"cannot convert {from_unit!r} to {to_unit!r}")
    return amount / target
