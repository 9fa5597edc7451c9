"""fedgate convert ecg: WFDB / CSV recordings -> 12-Lead / General ECG -> samples again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
import wfdb
from pydicom.uid import GeneralECGWaveformStorage, TwelveLeadECGWaveformStorage

from fedgate.cli import main
from tests.convert.conftest import assert_valid_dicom

LEADS_12 = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"]
MDC_12 = ["2:1", "2:2", "2:61", "2:62", "2:63", "2:64", "2:3", "2:4", "2:5", "2:6", "2:7", "2:8"]


def synthetic_ecg(seconds: float, fs: int, leads: int, seed: int = 0) -> npt.NDArray[np.float64]:
    """Beats (narrow Gaussian 'QRS' spikes at 72/min) plus noise, in mV, per lead."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    beat = np.zeros_like(t)
    for centre in np.arange(0.3, seconds, 60 / 72):
        beat += np.exp(-(((t - centre) / 0.012) ** 2))
    gains = rng.uniform(-1.8, 1.8, leads)
    return np.stack([g * beat + rng.normal(0, 0.03, t.size) for g in gains], axis=1)


def write_wfdb(
    directory: Path,
    name: str,
    signal: npt.NDArray[np.float64],
    fs: int,
    leads: list[str],
    gain: float = 200.0,
) -> Path:
    wfdb.wrsamp(
        name,
        fs=fs,
        units=["mV"] * len(leads),
        sig_name=leads,
        p_signal=signal,
        fmt=["16"] * len(leads),
        adc_gain=[gain] * len(leads),
        baseline=[0] * len(leads),
        write_dir=str(directory),
    )
    return directory / f"{name}.hea"


def convert(*args: str) -> int:
    return main(["convert", "ecg", *args])


def only_instance(directory: Path) -> pydicom.Dataset:
    paths = list(directory.glob("*.dcm"))
    assert len(paths) == 1
    return pydicom.dcmread(paths[0])


def test_wfdb_12_lead_round_trip_is_lossless(tmp_path: Path) -> None:
    signal = synthetic_ecg(10, 500, 12)
    header = write_wfdb(tmp_path, "rec", signal, 500, LEADS_12)
    record = wfdb.rdrecord(str(tmp_path / "rec"))  # what the record holds after its own ADC
    out = tmp_path / "out"

    assert convert("--input", str(header), "--patient-id", "P001", "--out", str(out)) == 0

    ds = only_instance(out)
    assert ds.SOPClassUID == TwelveLeadECGWaveformStorage
    assert ds.Modality == "ECG" and ds.PatientID == "P001"
    group = ds.WaveformSequence[0]
    assert float(group.SamplingFrequency) == 500.0
    assert group.WaveformSampleInterpretation == "SS" and group.WaveformBitsAllocated == 16
    channels = group.ChannelDefinitionSequence
    assert [c.ChannelSourceSequence[0].CodeValue for c in channels] == MDC_12
    assert {c.ChannelSourceSequence[0].CodingSchemeDesignator for c in channels} == {"MDC"}
    assert [c.ChannelLabel for c in channels] == LEADS_12
    assert {c.ChannelSensitivityUnitsSequence[0].CodeValue for c in channels} == {"mV"}
    assert {float(c.ChannelSensitivity) for c in channels} == {1 / 200}  # the record's 1/gain
    # pydicom's waveform support reads back the record's samples exactly (no requantisation).
    samples = ds.waveform_array(0)
    assert samples.shape == (5000, 12)
    np.testing.assert_allclose(samples, record.p_signal, atol=1e-9)
    np.testing.assert_allclose(samples, signal, atol=0.5 / 200 + 1e-9)
    assert_valid_dicom(next(out.glob("*.dcm")))


def test_csv_round_trip_within_quantisation(tmp_path: Path) -> None:
    signal = synthetic_ecg(4, 250, 3, seed=2)
    csv_path = tmp_path / "ecg.csv"
    lines = ["I,II,V2"] + [",".join(f"{v:.4f}" for v in row) for row in signal]
    csv_path.write_text("\n".join(lines) + "\n")
    study = "1.2.826.0.1.3680043.8.498.77"
    out = tmp_path / "out"

    assert (
        convert(
            "--input",
            str(csv_path),
            "--patient-id",
            "P002",
            "--study-instance-uid",
            study,
            "--sampling-frequency",
            "250",
            "--out",
            str(out),
        )
        == 0
    )

    ds = only_instance(out)
    assert ds.StudyInstanceUID == study  # filed with the patient's imaging study
    channels = ds.WaveformSequence[0].ChannelDefinitionSequence
    back = ds.waveform_array(0)
    for index, channel in enumerate(channels):
        step = float(channel.ChannelSensitivity)
        assert step <= 0.0001  # finest step that fits: 0.1 uV for a +-1.8 mV signal
        written = np.array([float(f"{v:.4f}") for v in signal[:, index]])
        assert np.max(np.abs(back[:, index] - written)) <= step / 2 + 1e-12
    assert_valid_dicom(next(out.glob("*.dcm")))


def test_long_or_many_lead_recordings_become_general_ecg(tmp_path: Path) -> None:
    # 40 s at 500 Hz is more than the 16384 samples a 12-Lead ECG object may hold.
    leads = [*LEADS_12, "v7", "v8", "v9"]
    signal = synthetic_ecg(40, 500, len(leads))
    header = write_wfdb(tmp_path, "long", signal, 500, leads)
    out = tmp_path / "out"

    assert convert("--input", str(header), "--patient-id", "P003", "--out", str(out)) == 0

    ds = only_instance(out)
    assert ds.SOPClassUID == GeneralECGWaveformStorage
    assert ds.waveform_array(0).shape == (20000, 15)
    assert_valid_dicom(next(out.glob("*.dcm")))


def _convert_csv(csv_path: Path, out: Path, *extra: str) -> int:
    return convert(
        "--input",
        str(csv_path),
        "--patient-id",
        "P004",
        "--sampling-frequency",
        "500",
        "--out",
        str(out),
        *extra,
    )


def test_missing_samples_are_refused_unless_allowed_then_padding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path = tmp_path / "gap.csv"
    csv_path.write_text("I,II\n0.1,0.2\n,0.3\n0.5,nan\n")
    out = tmp_path / "out"

    assert _convert_csv(csv_path, out) == 2
    err = capsys.readouterr().err
    assert "lead I misses 1 of 3 samples (sample 2)" in err
    assert "lead II misses 1 of 3 samples (sample 3)" in err
    assert "--allow-missing" in err and not out.exists()

    assert _convert_csv(csv_path, out, "--allow-missing") == 0
    err = capsys.readouterr().err
    assert "missing: lead I misses 1 of 3 samples (sample 2): written as the padding value" in err
    ds = only_instance(out)
    group = ds.WaveformSequence[0]
    padding = int(np.frombuffer(group.WaveformPaddingValue, "<i2")[0])
    raw = np.frombuffer(group.WaveformData, "<i2").reshape(3, 2)
    assert raw[1, 0] == padding and padding not in raw[[0, 2], 0]
    assert raw[2, 1] == padding and padding not in raw[[0, 1], 1]
    assert_valid_dicom(next(out.glob("*.dcm")))


def test_a_lead_without_samples_is_refused_or_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signal = synthetic_ecg(2, 500, 12, seed=4)
    names = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    rows = [
        ",".join("" if lead == 11 else f"{v:.4f}" for lead, v in enumerate(row)) for row in signal
    ]
    csv_path = tmp_path / "no-v6.csv"
    csv_path.write_text(",".join(names) + "\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"

    assert _convert_csv(csv_path, out) == 2
    assert "lead V6 has no sample" in capsys.readouterr().err and not out.exists()

    assert _convert_csv(csv_path, out, "--allow-missing") == 0
    assert "missing: lead V6 has no sample: left out" in capsys.readouterr().err
    ds = only_instance(out)
    # 11 leads are not a 12-lead ECG: General ECG, and no channel pretends to be V6.
    assert ds.SOPClassUID == GeneralECGWaveformStorage
    labels = [c.ChannelLabel for c in ds.WaveformSequence[0].ChannelDefinitionSequence]
    assert labels == names[:11]
    assert "WaveformPaddingValue" not in ds.WaveformSequence[0]
    assert_valid_dicom(next(out.glob("*.dcm")))


def test_only_the_twelve_standard_leads_make_a_12_lead_ecg(tmp_path: Path) -> None:
    eleven = write_wfdb(tmp_path, "eleven", synthetic_ecg(2, 500, 11), 500, LEADS_12[:11])
    twelve = write_wfdb(tmp_path, "twelve", synthetic_ecg(2, 500, 12), 500, LEADS_12)
    for name, header in (("11", eleven), ("12", twelve)):
        assert (
            convert("--input", str(header), "--patient-id", "P006", "--out", str(tmp_path / name))
            == 0
        )
    assert only_instance(tmp_path / "11").SOPClassUID == GeneralECGWaveformStorage
    assert only_instance(tmp_path / "12").SOPClassUID == TwelveLeadECGWaveformStorage


def test_rerun_gives_the_same_uid_and_a_new_study_per_recording(tmp_path: Path) -> None:
    first = write_wfdb(tmp_path, "a", synthetic_ecg(2, 500, 12, seed=1), 500, LEADS_12)
    second = write_wfdb(tmp_path, "b", synthetic_ecg(2, 500, 12, seed=2), 500, LEADS_12)
    for run, header in (("1", first), ("2", first), ("3", second)):
        convert("--input", str(header), "--patient-id", "P005", "--out", str(tmp_path / run))
    one, again, other = (only_instance(tmp_path / run) for run in "123")
    assert one.SOPInstanceUID == again.SOPInstanceUID
    assert one.StudyInstanceUID == again.StudyInstanceUID
    assert other.StudyInstanceUID != one.StudyInstanceUID


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        ("bad_header", [], "not a readable WFDB record"),
        ("missing_dat", [], "not a readable WFDB record"),
        ("unknown_lead", [], "unknown lead name(s) ['foo']"),
        ("csv_no_fs", [], "give --sampling-frequency"),
        ("csv_text", ["--sampling-frequency", "500"], "bad.csv:3: 'x1' is not a number"),
        ("csv_ragged", ["--sampling-frequency", "500"], "bad.csv:3: 1 cells, but the header"),
        ("csv_unknown_lead", ["--sampling-frequency", "500"], "unknown lead name(s) ['Lead 7']"),
        ("csv_slow", ["--sampling-frequency", "100"], "100 Hz is outside the 200-1000 Hz"),
    ],
)
def test_bad_recordings_are_refused_with_the_reason(
    tmp_path: Path,
    setup: str,
    extra: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    signal = synthetic_ecg(1, 500, 2)
    if setup == "bad_header":
        path = write_wfdb(tmp_path, "rec", signal, 500, ["i", "ii"])
        path.write_text("rec two 500 xyz\nrec.dat 16 200 16 0\n")
    elif setup == "missing_dat":
        path = write_wfdb(tmp_path, "rec", signal, 500, ["i", "ii"])
        (tmp_path / "rec.dat").unlink()
    elif setup == "unknown_lead":
        path = write_wfdb(tmp_path, "rec", signal, 500, ["i", "foo"])
    else:
        path = tmp_path / "bad.csv"
        path.write_text(
            {
                "csv_no_fs": "I,II\n0.1,0.2\n",
                "csv_text": "I,II\n0.1,0.2\nx1,0.3\n",
                "csv_ragged": "I,II\n0.1,0.2\n0.3\n",
                "csv_unknown_lead": "I,Lead 7\n0.1,0.2\n",
                "csv_slow": "I,II\n0.1,0.2\n",
            }[setup]
        )
    out = tmp_path / "out"

    assert convert("--input", str(path), "--patient-id", "P9", "--out", str(out), *extra) == 2

    assert message in capsys.readouterr().err
    assert not out.exists()
