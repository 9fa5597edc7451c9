"""Statistical disclosure control of tables: minimum cell size and complementary suppression.

The unit of privacy is the patient (DESIGN.md principle 3): a cell is safe to release when at
least ``k`` distinct patients are behind it, whatever is counted in it. A cell with 1 to k-1
patients is suppressed, and so is an empty one, because "nobody" is as telling as "one person"
(0 is reported like 1-9).

Suppressing small cells is not enough when totals are known: total minus the released cells
gives back a lone suppressed cell. Every row, every column, and the whole of a one-way table
are "lines" whose totals an attacker can ask for; in each line with a suppressed cell, more
cells are suppressed (the smallest first) until at least two are and together they hold at
least ``k`` patients. This repeats until no line changes (the classic hypercube heuristic,
simplified; Hundepool et al., *Statistical Disclosure Control*, 2012, ch. 5).

Categories whose values are not known in advance (finding types, modalities, years) would leak
through their mere presence: a value with fewer than ``k`` distinct patients is merged into an
``(other)`` category (:mod:`.exact`), which is always present, so its being 0 looks like its
being 1-9.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass

OTHER = "(other)"

CellKey = tuple[Hashable, ...]


@dataclass
class Cell:
    """One cell of a table: what it counts (units) and how many distinct patients."""

    count: float
    patients: int
    suppressed: bool = False


def suppress(cells: dict[CellKey, Cell], k: int) -> None:
    """Mark cells suppressed: primary (fewer than ``k`` patients) then complementary."""
    for cell in cells.values():
        cell.suppressed = cell.patients < k
    dimensions = len(next(iter(cells))) if cells else 0
    lines = _lines(cells, dimensions)
    changed = True
    while changed:
        changed = False
        for line in lines:
            changed |= _protect_line([cells[key] for key in line], k)


def _lines(cells: dict[CellKey, Cell], dimensions: int) -> list[list[CellKey]]:
    if dimensions <= 1:
        return [list(cells)]
    lines: list[list[CellKey]] = []
    for axis in range(dimensions):
        groups: dict[CellKey, list[CellKey]] = defaultdict(list)
        for key in cells:
            groups[key[:axis] + key[axis + 1 :]].append(key)
        lines.extend(groups.values())
    return lines


def _protect_line(line: list[Cell], k: int) -> bool:
    changed = False
    while True:
        hidden = [c for c in line if c.suppressed]
        if not hidden:
            return changed
        if len(hidden) >= 2 and sum(c.patients for c in hidden) >= k:
            return changed
        candidates = [c for c in line if not c.suppressed]
        if not candidates:
            return changed
        min(candidates, key=lambda c: c.patients).suppressed = True
        changed = True
