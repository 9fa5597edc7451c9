"""How converters report bad input: located problems for skipped rows, errors for bad files."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """Why one input row was skipped: ``file:line: field: reason``."""

    source: str
    line: int | None
    field: str | None
    reason: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        what = f"{self.field}: " if self.field else ""
        return f"{where}: {what}{self.reason}"


class ConversionError(Exception):
    """Input that cannot be converted at all (a bad mapping file, a malformed recording).

    The message names the file and, where known, the line or field: it is shown to the user as
    it is.
    """
