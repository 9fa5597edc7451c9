"""fedgate convert metadata: clinical tables -> clinical-information SRs -> values again."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.sr.coding import Code

from fedgate.cli import main
from fedgate.convert.identity import derived_uid
from sr_writer.clinical import (
    CodedValue,
    NotAClinicalReport,
    NumericValue,
    is_clinical_report,
    read_clinical_values,
)
from tests.convert.conftest import assert_valid_dicom

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"

GOOD_CSV = f"""PatientID,StudyInstanceUID,PatientSex,age,lvef,weight,smoking,comment
P001,{STUDY_UID},F,67,35.5,71.2,former,seen twice
P002,,M,54,60,82 kg,never,
"""


def convert_to_folder(table: Path, mapping: Path, out: Path) -> int:
    """``fedgate convert metadata --csv TABLE --mapping MAPPING --out OUT``; its exit status."""
    return main(
        ["convert", "metadata", "--csv", str(table), "--mapping", str(mapping), "--out", str(out)]
    )


def _reports(directory: Path) -> dict[str, pydicom.Dataset]:
    datasets = [pydicom.dcmread(path) for path in sorted(directory.glob("*.dcm"))]
    return {str(ds.PatientID): ds for ds in datasets}


def test_csv_round_trip_values_units_codes_and_patient_matching(
    tmp_path: Path, mapping_file: Path
) -> None:
    table = tmp_path / "clinical.csv"
    table.write_text(GOOD_CSV)
    out = tmp_path / "out"

    status = convert_to_folder(table, mapping_file, out)

    assert status == 0
    reports = _reports(out)
    assert set(reports) == {"P001", "P002"}
    first = reports["P001"]
    # Filed with the patient's imaging study, as the row said.
    assert first.StudyInstanceUID == STUDY_UID
    assert first.PatientSex == "F"
    assert is_clinical_report(first)
    values = read_clinical_values(first)
    assert values == [
        NumericValue(Code("121033", "DCM", "Subject Age"), 67.0, Code("a", "UCUM", "year")),
        NumericValue(Code("10230-1", "LN", "x"), 35.5, Code("%", "UCUM", "percent")),
        NumericValue(Code("29463-7", "LN", "x"), 71.2, Code("kg", "UCUM", "kg")),
        CodedValue(Code("365981007", "SCT", "x"), Code("8517006", "SCT", "Ex-smoker")),
    ]
    assert values[1].concept.meaning == "LV ejection fraction"  # meanings travel too
    # "82 kg" carried the mapped unit: accepted. No study given: the patient's own study.
    second = reports["P002"]
    assert read_clinical_values(second)[2] == NumericValue(
        Code("29463-7", "LN", "x"), 82.0, Code("kg", "UCUM", "kg")
    )
    assert second.StudyInstanceUID == derived_uid(
        "fedgate.convert.clinical-information.study", "P002"
    )
    for path in out.glob("*.dcm"):
        assert_valid_dicom(path)


def test_rerun_gives_the_same_uids(tmp_path: Path, mapping_file: Path) -> None:
    table = tmp_path / "clinical.csv"
    table.write_text(GOOD_CSV)
    runs = []
    for name in ("a", "b"):
        main(
            [
                "convert",
                "metadata",
                "--csv",
                str(table),
                "--mapping",
                str(mapping_file),
                "--out",
                str(tmp_path / name),
            ]
        )
        runs.append(sorted(path.name for path in (tmp_path / name).glob("*.dcm")))
    assert runs[0] == runs[1] and len(runs[0]) == 2
    # ... and a changed value is a different report.
    table.write_text(GOOD_CSV.replace("35.5", "36.5"))
    main(
        [
            "convert",
            "metadata",
            "--csv",
            str(table),
            "--mapping",
            str(mapping_file),
            "--out",
            str(tmp_path / "c"),
        ]
    )
    changed = sorted(path.name for path in (tmp_path / "c").glob("*.dcm"))
    assert len(set(changed) & set(runs[0])) == 1


BAD_CSV = """PatientID,age,lvef,weight,smoking,bmi
P010,70,40,80,never,
P011,71,41,180 lb,never,
,72,42,81,never,
P013,73,abc,82,never,
P014,74,43,83,sometimes,
P015,75,44,84,current,27.1
"P016",76,45,85,former,,extra
P017,77,46,86,current,
"""


def test_bad_rows_are_reported_with_line_numbers_and_skipped(
    tmp_path: Path, mapping_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "bad.csv"
    table.write_text(BAD_CSV)
    out = tmp_path / "out"

    status = convert_to_folder(table, mapping_file, out)

    assert status == 1  # converted, but not everything
    skipped = sorted(
        line for line in capsys.readouterr().err.splitlines() if line.startswith("skipped:")
    )
    assert skipped == [
        f"skipped: {table}:3: weight: unit 'lb' is not the mapped unit 'kg' (UCUM, case-sensitive)",
        f"skipped: {table}:4: PatientID: missing: every row needs the patient's PatientID",
        f"skipped: {table}:5: lvef: 'abc' is not a number",
        f"skipped: {table}:6: smoking: 'sometimes' is not one of the mapped values "
        "('never', 'former', 'current')",
        f"skipped: {table}:7: bmi: unknown column (not in the mapping, nor in its 'ignore' list)",
        f"skipped: {table}:8: 1 cell(s) beyond the last column: ['extra']",
    ]
    # Nothing else is lost: the good rows (an empty cell in the unknown column is no loss).
    reports = _reports(out)
    assert set(reports) == {"P010", "P017"}
    assert [v.value for v in read_clinical_values(reports["P010"])[:3]] == [70.0, 40.0, 80.0]


def test_json_rows_report_their_own_lines(
    tmp_path: Path, mapping_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "clinical.json"
    table.write_text(
        "[\n"
        '  {"PatientID": "J1", "lvef": 50, "smoking": "never"},\n'
        '  {"PatientID": "J2",\n'
        '   "lvef": {"value": 55, "unit": "%"}},\n'
        '  {"PatientID": "J3", "lvef": {"value": 0.55, "unit": "1"}},\n'
        '  {"PatientID": "J4", "lvef": true}\n'
        "]\n"
    )
    out = tmp_path / "out"

    assert convert_to_folder(table, mapping_file, out) == 1

    err = capsys.readouterr().err
    assert f"{table}:5: lvef: unit '1' is not the mapped unit '%'" in err
    assert f"{table}:6: lvef: True is not a number" in err
    assert set(_reports(out)) == {"J1", "J2"}


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        (
            '{"columns": {"x": {"concept": {"scheme": "LN", "code": "1"}, "unit": "kg"}}}',
            "columns.x.concept: missing meaning",
        ),
        (
            '{"columns": {"x": {"concept": {"scheme": "LN", "code": "1", "meaning": "X"},'
            ' "unit": "milli gram"}}}',
            "columns.x.unit: 'milli gram' is not a UCUM unit code",
        ),
        (
            '{"columns": {"x": {"concept": {"scheme": "LN", "code": "1", "meaning": "X"}}}}',
            "columns.x: give exactly one of 'unit' (numeric) or 'values' (coded)",
        ),
        ('{"columns": {\n  "x": oops}}', "mapping.json:2: not valid JSON"),
    ],
)
def test_a_bad_mapping_stops_before_converting_anything(
    tmp_path: Path, mapping: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    mapping_file = tmp_path / "mapping.json"
    mapping_file.write_text(mapping)
    table = tmp_path / "t.csv"
    table.write_text("PatientID,x\nP1,1\n")
    out = tmp_path / "out"

    assert convert_to_folder(table, mapping_file, out) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_reader_refuses_other_documents(tmp_path: Path, mapping_file: Path) -> None:
    table = tmp_path / "clinical.csv"
    table.write_text(GOOD_CSV)
    main(
        [
            "convert",
            "metadata",
            "--csv",
            str(table),
            "--mapping",
            str(mapping_file),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    report = next(iter(_reports(tmp_path / "out").values()))
    report.ConceptNameCodeSequence[0].CodeValue = "126000"  # an imaging measurement report
    assert not is_clinical_report(report)
    with pytest.raises(NotAClinicalReport):
        read_clinical_values(report)


def test_bad_identifiers_and_patient_attributes_are_reported(
    tmp_path: Path, mapping_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "ids.csv"
    table.write_text(
        "PatientID,StudyInstanceUID,PatientSex,PatientBirthDate,lvef\n"
        "P1,1.02.3,F,1950-01-31,40\n"
        "P2,1.2.3,X,1950-01-31,41\n"
        "P3,1.2.3,M,31.01.1950,42\n"
        "P4,1.2.3,M,1950-01-31,43\n"
    )
    out = tmp_path / "out"

    assert convert_to_folder(table, mapping_file, out) == 1

    err = capsys.readouterr().err
    assert f"{table}:2: StudyInstanceUID: '1.02.3' is not a UID" in err
    assert f"{table}:3: PatientSex: 'X' is not a DICOM patient sex (M, F or O)" in err
    assert f"{table}:4: PatientBirthDate: '31.01.1950' is not a date" in err
    (report,) = _reports(out).values()
    assert (report.PatientID, report.PatientBirthDate, report.StudyInstanceUID) == (
        "P4",
        "19500131",
        "1.2.3",
    )


def test_progress_is_shown_without_flooding(
    tmp_path: Path, mapping_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "many.csv"
    table.write_text("PatientID,lvef\n" + "".join(f"P{i},{i % 60 + 10}\n" for i in range(250)))

    assert (
        main(
            [
                "convert",
                "metadata",
                "--csv",
                str(table),
                "--mapping",
                str(mapping_file),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )

    progress = [line for line in capsys.readouterr().err.splitlines() if line.startswith("written")]
    assert progress[0] == "written 2/250" and progress[-1] == "written 250/250"
    assert len(progress) == 125
    assert len(list((tmp_path / "out").glob("*.dcm"))) == 250


def test_a_decimal_comma_is_read_and_an_ambiguous_comma_refused(
    tmp_path: Path, mapping_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A European spreadsheet's export: semicolons between cells, commas in numbers.
    table = tmp_path / "komma.csv"
    table.write_text(
        "PatientID;age;lvef;weight;smoking\n"
        "P031;67;35,5;70,5;never\n"
        "P032;54;60;70,5 kg;never\n"
        "P033;54;60;1,500;never\n"
    )
    out = tmp_path / "out"

    status = convert_to_folder(table, mapping_file, out)

    assert status == 1  # the ambiguous row is skipped, saying why
    assert (
        f"skipped: {table}:4: weight: '1,500': a decimal comma or a thousands separator?"
        in capsys.readouterr().err
    )
    reports = _reports(out)
    assert set(reports) == {"P031", "P032"}
    for patient in ("P031", "P032"):
        weight = read_clinical_values(reports[patient])[2]
        assert isinstance(weight, NumericValue) and weight.value == 70.5
    assert read_clinical_values(reports["P031"])[1].value == 35.5  # type: ignore[union-attr]
