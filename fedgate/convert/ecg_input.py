"""Reading ECG recordings: WFDB records (PhysioNet's format) and CSV with one column per lead.

Both give an :class:`EcgRecording`: the samples in physical units (NaN where a sample is
missing), the lead names, the sampling frequency, and, for WFDB, the recording's own
resolution (1 / ADC gain), so that converting a WFDB record keeps its digital samples exactly.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedgate.convert.problems import ConversionError

#: WFDB unit strings -> UCUM codes. ECG leads are voltages; anything else is refused.
_VOLTAGE_UNITS = {"mv": "mV", "uv": "uV", "μv": "uV", "µv": "uV", "v": "V"}


@dataclass(frozen=True)
class EcgRecording:
    """One recording: ``samples[i, c]`` is sample ``i`` of lead ``leads[c]`` in ``units[c]``."""

    source: str
    leads: tuple[str, ...]
    samples: npt.NDArray[np.float64]
    units: tuple[str, ...]  # UCUM codes: "mV", "uV", "V"
    sampling_frequency: float
    #: The source's quantum per lead (same units), where it has one (WFDB: 1 / ADC gain).
    resolutions: tuple[float | None, ...]
    acquisition_datetime: dt.datetime | None = None

    def digest(self) -> str:
        """A hash of the content: what a re-run recognises as the same recording."""
        sha = hashlib.sha256()
        sha.update(repr((self.leads, self.units, self.sampling_frequency)).encode())
        sha.update(np.ascontiguousarray(self.samples).tobytes())
        return sha.hexdigest()


def read_recording(path: Path, sampling_frequency: float | None = None) -> EcgRecording:
    """A WFDB record (its ``.hea``) or a CSV recording, by suffix."""
    if path.suffix.lower() == ".hea":
        recording = read_wfdb(path)
        if sampling_frequency is not None and not math.isclose(
            sampling_frequency, recording.sampling_frequency
        ):
            raise ConversionError(
                f"{path}: the header says {recording.sampling_frequency:g} Hz, "
                f"--sampling-frequency says {sampling_frequency:g} Hz"
            )
        return recording
    if path.suffix.lower() in {".csv", ".tsv", ".txt"}:
        if sampling_frequency is None:
            raise ConversionError(
                f"{path}: a CSV recording has no sampling frequency: give --sampling-frequency"
            )
        return read_ecg_csv(path, sampling_frequency)
    raise ConversionError(f"{path}: expected a WFDB header (.hea) or a CSV file (.csv)")


def read_wfdb(header: Path) -> EcgRecording:
    """Read a WFDB record with PhysioNet's ``wfdb`` package (signal files beside the header)."""
    import wfdb  # imported here: it pulls in pandas and matplotlib, which only this needs

    if not header.is_file():
        raise ConversionError(f"{header}: no such file")
    try:
        record = wfdb.rdrecord(str(header.with_suffix("")), physical=True)
    except Exception as error:  # wfdb raises many types for one cause: a malformed record
        raise ConversionError(
            f"{header}: not a readable WFDB record: {type(error).__name__}: {error}"
        ) from None
    if record.p_signal is None or record.sig_name is None or not record.fs:
        raise ConversionError(f"{header}: the record has no signals, names or frequency")
    units: list[str] = []
    for name, unit in zip(record.sig_name, record.units or [None] * record.n_sig, strict=True):
        ucum = _VOLTAGE_UNITS.get(str(unit or "mV").strip().lower())
        if ucum is None:
            raise ConversionError(f"{header}: lead {name!r} is in {unit!r}, not a voltage")
        units.append(ucum)
    gains = record.adc_gain or [0.0] * record.n_sig
    acquired = None
    if record.base_date is not None and record.base_time is not None:
        acquired = dt.datetime.combine(record.base_date, record.base_time)
    return EcgRecording(
        source=str(header),
        leads=tuple(str(name) for name in record.sig_name),
        samples=np.asarray(record.p_signal, dtype=np.float64),
        units=tuple(units),
        sampling_frequency=float(record.fs),
        resolutions=tuple(1.0 / gain if gain else None for gain in gains),
        acquisition_datetime=acquired,
    )


def read_ecg_csv(path: Path, sampling_frequency: float) -> EcgRecording:
    """A CSV with a header row of lead names and one row per sample, in mV."""
    if not sampling_frequency > 0:
        raise ConversionError(f"{path}: sampling frequency must be positive")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise ConversionError(f"{path}: cannot read: {error}") from None
    reader = csv.reader(text.splitlines())
    header = [name.strip() for name in next(reader, [])]
    if not header or not all(header):
        raise ConversionError(f"{path}:1: the header row must name every lead")
    if len(set(header)) != len(header):
        raise ConversionError(f"{path}:1: a lead is named twice in the header")
    rows: list[list[float]] = []
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            raise ConversionError(
                f"{path}:{line}: {len(cells)} cells, but the header names {len(header)} leads"
            )
        try:
            rows.append([float(cell) if cell.strip() else math.nan for cell in cells])
        except ValueError:
            bad = next(c for c in cells if c.strip() and not _is_float(c))
            raise ConversionError(f"{path}:{line}: {bad.strip()[:20]!r} is not a number") from None
    if not rows:
        raise ConversionError(f"{path}: no samples after the header")
    return EcgRecording(
        source=str(path),
        leads=tuple(header),
        samples=np.asarray(rows, dtype=np.float64),
        units=("mV",) * len(header),
        sampling_frequency=float(sampling_frequency),
        resolutions=(None,) * len(header),
    )


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
