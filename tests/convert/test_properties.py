"""Properties over many inputs: quantisation bounds and exact numeric round trips."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pydicom.sr.coding import Code

from fedgate.convert.ecg import PADDING_VALUE, quantize
from sr_writer.clinical import ClinicalInformationReport, NumericValue, read_clinical_values

voltages = arrays(
    np.float64,
    st.integers(1, 200),
    elements=st.floats(-50.0, 50.0, allow_nan=False, allow_subnormal=False),
)


@settings(max_examples=200, deadline=None)
@given(voltages)
def test_quantised_samples_are_within_half_a_step_and_never_the_padding_value(
    samples: np.ndarray,
) -> None:
    text, digital = quantize(samples, None)
    step = float(text)
    assert len(text) <= 16  # a valid DS
    assert PADDING_VALUE not in digital
    assert np.max(np.abs(digital * step - samples)) <= step / 2 * (1 + 1e-9)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(-32767, 32767), min_size=1, max_size=100),
    st.sampled_from([200.0, 1000.0, 400.0, 3.0]),
)
def test_a_source_resolution_is_kept_exactly(counts: list[int], gain: float) -> None:
    samples = np.array(counts, dtype=np.float64) / gain  # what a WFDB reader gives
    _, digital = quantize(samples, 1.0 / gain)
    assert list(digital) == counts


@settings(max_examples=25, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_numeric_values_survive_the_sr_exactly(value: float) -> None:
    report = ClinicalInformationReport(
        [NumericValue(Code("10230-1", "LN", "LVEF"), value, Code("%", "UCUM", "percent"))],
        patient_id="P1",
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4",
        sop_instance_uid="1.2.3.4.5",
        tracking_uid="1.2.3.4.6",
        device_observer_uid="1.2.3.4.7",
    )
    (back,) = read_clinical_values(report)
    assert back.value == value
