"""Small phantom series and their broken variants, for the bad-input tests."""

from __future__ import annotations

import copy

from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID

from fedgate.phantom import Phantom, PhantomSpec, derived_uid, generate_phantom

MPEG2_MAIN_PROFILE = UID("1.2.840.10008.1.2.4.100")


def small_phantom(seed: int, lesions: tuple[float, ...] = ()) -> Phantom:
    """64x64x12 at 4 mm x 5 mm: quick to send, still a chest with lungs."""
    return generate_phantom(
        PhantomSpec(
            seed=seed,
            rows=64,
            columns=64,
            slices=12,
            pixel_spacing_mm=4.0,
            slice_thickness_mm=5.0,
            lesion_diameters_mm=lesions,
        )
    )


def renamed_series(datasets: list[Dataset], label: str) -> list[Dataset]:
    """Copies of ``datasets`` in a new series (and new instance UIDs), same study."""
    series_uid = derived_uid("test-series", datasets[0].SeriesInstanceUID, label)
    result = []
    for index, ds in enumerate(datasets):
        ds = copy.deepcopy(ds)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = derived_uid("test-instance", series_uid, index)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        result.append(ds)
    return result


def mixed_orientation(phantom: Phantom) -> list[Dataset]:
    datasets = renamed_series(list(phantom.instances()), "mixed-orientation")
    for ds in datasets[6:]:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # coronal
    return datasets


def with_gap(phantom: Phantom) -> list[Dataset]:
    datasets = renamed_series(list(phantom.instances()), "gap")
    return datasets[:5] + datasets[7:]


def not_ct(phantom: Phantom) -> list[Dataset]:
    datasets = renamed_series(list(phantom.instances()), "mr")
    for ds in datasets:
        ds.Modality = "MR"
    return datasets


def without_pixel_data(phantom: Phantom) -> list[Dataset]:
    datasets = renamed_series(list(phantom.instances()), "no-pixels")
    del datasets[4].PixelData
    return datasets


def unsupported_syntax(phantom: Phantom) -> list[Dataset]:
    """Pixel data claiming MPEG-2 (a video syntax nothing here decodes)."""
    datasets = renamed_series(list(phantom.instances()), "mpeg2")
    for ds in datasets:
        ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = MPEG2_MAIN_PROFILE
    return datasets
