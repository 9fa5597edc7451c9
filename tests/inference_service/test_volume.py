"""Volume assembly: sorting, geometry checks, decoding of compressed transfer syntaxes."""

from __future__ import annotations

import io
import random
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from fedgate.phantom import RESCALE_INTERCEPT, slice_hu
from inference_service.errors import PermanentError
from inference_service.manifest import InputSpec
from inference_service.volume import GeometryError, assemble_volume
from tests.inference_service import phantoms
from tests.support.requirements import require_executable

CT = InputSpec(modality="CT")


def test_slices_are_sorted_by_position_not_instance_number() -> None:
    phantom = phantoms.small_phantom(seed=21)
    datasets = list(phantom.instances())
    shuffled = datasets[:]
    random.Random(0).shuffle(shuffled)
    for ds in shuffled:
        ds.InstanceNumber = 1  # useless, as archives sometimes make it
    volume = assemble_volume(shuffled, CT, "m")
    assert [ds.SOPInstanceUID for ds in volume.datasets] == list(phantom.truth.sop_instance_uids)
    expected = np.rint(slice_hu(phantom, 3) - RESCALE_INTERCEPT) + RESCALE_INTERCEPT
    np.testing.assert_array_equal(volume.values[3], np.clip(expected, -1024, 3071))
    assert volume.spacing_mm == pytest.approx((5.0, 4.0, 4.0))
    # Voxel (0, 0, 0) is the first slice's Image Position (Patient).
    np.testing.assert_allclose(
        volume.voxel_to_patient(np.zeros(3)), [float(v) for v in datasets[0].ImagePositionPatient]
    )


def test_mixed_orientation_is_refused() -> None:
    with pytest.raises(GeometryError, match="mixed orientation: instance"):
        assemble_volume(phantoms.mixed_orientation(phantoms.small_phantom(22)), CT, "m")


def test_missing_slices_are_refused() -> None:
    with pytest.raises(GeometryError, match=r"about 2 missing slice\(s\): 15.00 mm between"):
        assemble_volume(phantoms.with_gap(phantoms.small_phantom(23)), CT, "m")


def test_non_ct_series_is_refused() -> None:
    with pytest.raises(PermanentError, match="model m needs a CT series; this series is MR"):
        assemble_volume(phantoms.not_ct(phantoms.small_phantom(24)), CT, "m")


def test_instance_without_pixel_data_is_refused() -> None:
    datasets = phantoms.without_pixel_data(phantoms.small_phantom(25))
    expected = f"instance {datasets[4].SOPInstanceUID}: no Pixel Data"
    with pytest.raises(PermanentError, match=expected):
        assemble_volume(datasets, CT, "m")


def test_unsupported_transfer_syntax_is_refused() -> None:
    datasets = phantoms.unsupported_syntax(phantoms.small_phantom(26))
    with pytest.raises(PermanentError, match="cannot decode pixel data in transfer syntax"):
        assemble_volume(datasets, CT, "m")


def test_too_few_slices_are_refused() -> None:
    datasets = list(phantoms.small_phantom(27).instances())
    spec = InputSpec(modality="CT", series={"min_slices": 20})
    with pytest.raises(PermanentError, match="needs at least 20 slices; the series has 12"):
        assemble_volume(datasets, spec, "m")


def _reread(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_compressed_series_decode_to_the_same_values(syntax: pydicom.uid.UID) -> None:
    phantom = phantoms.small_phantom(28, lesions=(10.0,))
    reference = assemble_volume(list(phantom.instances()), CT, "m")
    compressed = []
    for ds in phantom.instances():
        ds.compress(syntax)
        compressed.append(_reread(ds))
    assert str(compressed[0].file_meta.TransferSyntaxUID) == syntax
    volume = assemble_volume(compressed, CT, "m")
    np.testing.assert_array_equal(volume.values, reference.values)


@pytest.mark.parametrize(
    ("option", "syntax", "tolerance_hu"),
    [
        ("+e1", "1.2.840.10008.1.2.4.70", 0.0),  # JPEG Lossless, first-order prediction
        ("+ee", "1.2.840.10008.1.2.4.51", 30.0),  # JPEG Extended (12-bit, lossy: ~3 HU mean)
    ],
)
def test_jpeg_written_by_dcmtk_decodes(
    tmp_path: Path, option: str, syntax: str, tolerance_hu: float
) -> None:
    encoder = require_executable("dcmcjpeg")
    phantom = phantoms.small_phantom(29, lesions=(10.0,))
    reference = assemble_volume(list(phantom.instances()), CT, "m")
    compressed = []
    for path in phantom.write(tmp_path / "plain"):
        target = tmp_path / f"{path.stem}.jpeg.dcm"
        subprocess.run([encoder, option, str(path), str(target)], check=True, capture_output=True)
        compressed.append(pydicom.dcmread(target))
    assert str(compressed[0].file_meta.TransferSyntaxUID) == syntax
    volume = assemble_volume(compressed, CT, "m")
    difference = np.abs(volume.values - reference.values)
    assert float(difference.mean()) <= tolerance_hu / 5
    assert float(difference.max()) <= tolerance_hu


def test_duplicate_positions_and_sheared_stacks_are_refused() -> None:
    datasets = list(phantoms.small_phantom(30).instances())
    duplicate = phantoms.renamed_series(datasets, "duplicate")
    duplicate[3].ImagePositionPatient = duplicate[2].ImagePositionPatient
    with pytest.raises(GeometryError, match="share the position"):
        assemble_volume(duplicate, CT, "m")
    sheared = phantoms.renamed_series(datasets, "sheared")
    x, y, z = (float(v) for v in sheared[6].ImagePositionPatient)
    sheared[6].ImagePositionPatient = [x + 12.0, y, z]  # as a gantry tilt would shift it
    with pytest.raises(GeometryError, match=r"shifted 12\.00 mm in-plane"):
        assemble_volume(sheared, CT, "m")


def test_multi_frame_images_are_refused() -> None:
    datasets = phantoms.renamed_series(list(phantoms.small_phantom(31).instances()), "frames")
    datasets[0].NumberOfFrames = 2
    with pytest.raises(PermanentError, match="multi-frame images are not supported"):
        assemble_volume(datasets, CT, "m")


def test_voxel_to_patient_follows_image_orientation() -> None:
    """Sagittal slices: rows run along +y (anterior-posterior), columns along -z (down)."""
    datasets = phantoms.renamed_series(list(phantoms.small_phantom(32).instances()), "sagittal")
    for index, ds in enumerate(datasets):
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [-5.0 * index, -100.0, 50.0]
    random.Random(1).shuffle(datasets)
    volume = assemble_volume(datasets, CT, "m")
    # Normal = row x column cosines = (-1, 0, 0): slices sorted by -x, i.e. by index.
    assert [float(ds.ImagePositionPatient[0]) for ds in volume.datasets] == [
        -5.0 * i for i in range(12)
    ]
    slice_index, row, column = 3, 10, 20
    expected = np.array([-15.0, -100.0 + column * 4.0, 50.0 - row * 4.0])
    np.testing.assert_allclose(
        volume.voxel_to_patient(np.array([slice_index, row, column])), expected
    )
