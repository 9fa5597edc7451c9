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
through their mere presence: a category with fewer than ``k`` patients is merged into an
``(other)`` category, which is always present, so its being 0 looks like its being 1-9.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

OTHER = "(other)"

CellKey = tuple[Hashable, ...]


@dataclass
class Cell:
    """One cell of a table: what it counts (units) and how many distinct patients."""

    count: float
    patients: int
    suppressed: bool = False
    #: Suppressed whatever its size (the differencing guard found it too close to an earlier
    #: answer); a primary suppression like a small cell.
    withheld: bool = False


def merge_rare_categories(
    cells: dict[CellKey, Cell], open_axes: Sequence[bool], k: int
) -> tuple[dict[CellKey, Cell], list[set[Hashable]]]:
    """Merge the values of open axes with fewer than ``k`` patients into ``(other)``.

    The merged cell's patients are the sum over the merged cells (an upper bound on the distinct
    patients, since one patient may be in two of them); ``(other)`` is always present.
    Also returns, per axis, the values merged.
    """
    result = dict(cells)
    merged_values: list[set[Hashable]] = []
    for axis, is_open in enumerate(open_axes):
        rare = rare_values(result, axis, k) if is_open else set()
        merged_values.append(rare)
        if not is_open:
            continue
        merged: dict[CellKey, Cell] = {}
        for key, cell in result.items():
            new_key = (*key[:axis], OTHER, *key[axis + 1 :]) if key[axis] in rare else key
            if new_key in merged:
                merged[new_key].count += cell.count
                merged[new_key].patients += cell.patients
            else:
                merged[new_key] = Cell(cell.count, cell.patients)
        result = merged
    return result, merged_values


def rare_values(cells: dict[CellKey, Cell], axis: int, k: int) -> set[Hashable]:
    """The values of ``axis`` held by fewer than ``k`` patients (summed over its cells)."""
    totals: dict[Hashable, int] = defaultdict(int)
    for key, cell in cells.items():
        totals[key[axis]] += cell.patients
    return {value for value, patients in totals.items() if patients < k}


def complete(cells: dict[CellKey, Cell], axes_values: Sequence[Sequence[Hashable]]) -> None:
    """Add the empty cells of the full grid (each axis' values), so that 0s are cells too."""
    keys: list[CellKey] = [()]
    for values in axes_values:
        keys = [(*key, value) for key in keys for value in values]
    for key in keys:
        cells.setdefault(key, Cell(0, 0))


def suppress(cells: dict[CellKey, Cell], k: int) -> None:
    """Mark cells suppressed: primary (fewer than ``k`` patients) then complementary."""
    for cell in cells.values():
        cell.suppressed = cell.patients < k or cell.withheld
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
