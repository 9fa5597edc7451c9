"""``fedgate convert``: clinical tables and ECG recordings to DICOM, into a folder or a PACS.

    fedgate convert metadata --csv FILE --mapping FILE (--out DIR | --stow URL)
    fedgate convert ecg --input FILE --patient-id ID [--study-instance-uid UID]
                        [--sampling-frequency HZ] [--allow-missing] (--out DIR | --stow URL)

Exit status: 0 when everything was converted and delivered; 1 when some rows were skipped or
some objects were not delivered (each reported on stderr with its line or UID); 2 when the
input could not be converted at all (the reason names the file and line or field).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import UID

from fedgate.convert.output import Delivery, Progress, dicomweb_client, stow, write_folder
from fedgate.convert.pacs import PacsDirectory
from fedgate.convert.problems import ConversionError, Problem

EXIT_OK, EXIT_INCOMPLETE, EXIT_BAD_INPUT = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)

    metadata = kinds.add_parser(
        "metadata",
        help="clinical variables (CSV/JSON + mapping to codes) -> one SR per patient/study",
        description="Convert a table of clinical variables to clinical-information SR documents.",
    )
    metadata.add_argument(
        "--csv",
        type=Path,
        required=True,
        metavar="FILE",
        help="the table: CSV with a header row (or .json array / .jsonl of row objects); "
        "a PatientID column, optionally StudyInstanceUID",
    )
    metadata.add_argument(
        "--mapping",
        type=Path,
        required=True,
        metavar="FILE",
        help="JSON/YAML mapping of each column to its coded concept and unit or coded values",
    )
    _add_destination(metadata)

    ecg = kinds.add_parser(
        "ecg",
        help="ECG recording (WFDB .hea or CSV) -> 12-Lead or General ECG Waveform Storage",
        description="Convert one ECG recording to a DICOM ECG waveform object.",
    )
    ecg.add_argument(
        "--input",
        type=Path,
        required=True,
        metavar="FILE",
        help="a WFDB record's header (.hea) or a CSV with one column per lead, in mV",
    )
    ecg.add_argument("--patient-id", required=True, help="the patient's PatientID in the PACS")
    ecg.add_argument(
        "--study-instance-uid",
        help="the study to file it in (default: a new study, derived "
        "from the patient and the recording, the same on every run)",
    )
    ecg.add_argument(
        "--sampling-frequency",
        type=float,
        metavar="HZ",
        help="samples per second of a CSV recording (required for CSV; WFDB headers carry it)",
    )
    ecg.add_argument(
        "--allow-missing",
        action="store_true",
        help="write a recording with missing samples (NaN, empty cells) instead of refusing "
        "it: a lead without any sample is left out (then General ECG), a missing sample is "
        "the Waveform Padding Value; each is reported",
    )
    _add_destination(ecg)


def _add_destination(parser: argparse.ArgumentParser) -> None:
    destination = parser.add_mutually_exclusive_group(required=True)
    destination.add_argument("--out", type=Path, metavar="DIR", help="write Part 10 files here")
    destination.add_argument(
        "--stow", metavar="URL", help="STOW-RS to this DICOMweb root (gateway or PACS)"
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("FEDGATE_TOKEN"),
        help="bearer token for --stow (default: $FEDGATE_TOKEN)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        if args.kind == "metadata":
            return _run_metadata(args)
        return _run_ecg(args)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _run_metadata(args: argparse.Namespace) -> int:
    from fedgate.convert.mapping import load_mapping
    from fedgate.convert.metadata import build_report, complete_from_pacs, convert_table
    from fedgate.convert.table import read_table

    mapping = load_mapping(args.mapping)
    table = read_table(args.csv)
    conversion = convert_table(table, mapping)
    if args.stow:
        conversion = complete_from_pacs(conversion, _pacs(args), table.source)
    _report_problems(conversion.problems)
    reports = (build_report(record) for record in conversion.records)
    delivery = _deliver(reports, len(conversion.records), args)
    print(
        f"{len(conversion.records)} row(s) converted, {len(conversion.problems)} skipped; "
        f"{len(delivery.written)} object(s) delivered, {len(delivery.failed)} failed",
        file=sys.stderr,
    )
    return EXIT_OK if not conversion.problems and not delivery.failed else EXIT_INCOMPLETE


def _run_ecg(args: argparse.Namespace) -> int:
    from fedgate.convert.ecg import build_ecg, usable_recording
    from fedgate.convert.ecg_input import read_recording
    from fedgate.convert.identity import validate_patient_id, validate_uid

    try:
        patient_id = validate_patient_id(args.patient_id)
        study_uid = validate_uid(args.study_instance_uid) if args.study_instance_uid else None
    except ValueError as error:
        raise ConversionError(str(error)) from None
    recording = read_recording(args.input, sampling_frequency=args.sampling_frequency)
    recording, notes = usable_recording(recording, allow_missing=args.allow_missing)
    for note in notes:
        print(f"missing: {note}", file=sys.stderr)
    dataset = build_ecg(
        recording,
        patient_id=patient_id,
        study_instance_uid=study_uid,
        pacs=_pacs(args) if args.stow else None,
        allow_missing=args.allow_missing,
    )
    delivery = _deliver([dataset], 1, args)
    print(
        f"{UID(dataset.SOPClassUID).name}: {len(recording.leads)} lead(s), "
        f"{recording.samples.shape[0]} samples at {recording.sampling_frequency:g} Hz; "
        f"{len(delivery.written)} object(s) delivered, {len(delivery.failed)} failed",
        file=sys.stderr,
    )
    return EXIT_OK if not delivery.failed else EXIT_INCOMPLETE


def _pacs(args: argparse.Namespace) -> PacsDirectory:
    return PacsDirectory(dicomweb_client(args.stow, args.token))


def _deliver(datasets: Iterable[Dataset], total: int, args: argparse.Namespace) -> Delivery:
    if args.out is not None:
        delivery = write_folder(datasets, args.out, Progress("written", total))
    else:
        delivery = stow(datasets, args.stow, token=args.token, progress=Progress("stored", total))
    for uid, reason in delivery.failed:
        print(f"not stored: {uid}: {reason}", file=sys.stderr)
    return delivery


def _report_problems(problems: list[Problem]) -> None:
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
