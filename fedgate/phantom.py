"""Deterministic synthetic chest CT phantoms: the data every test, the demo and the benchmarks use.

A phantom is one CT series (CT Image Storage, PS3.3 A.3) of an elliptic body with two lungs,
a spine and spherical lesions of known centre and diameter inside the lungs. Everything is
derived from a seed: patient attributes (sex, age, dates), UIDs, lesion positions and noise,
so the same spec always gives byte-identical instances and the ground truth is known.

Lesion edges carry partial-volume intensities (the fraction of each voxel inside the sphere),
as a real scanner would, so a volume measured by thresholding at half contrast is unbiased.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, CTImageStorage, ExplicitVRLittleEndian

# An organisation root for the phantoms' UIDs (PS3.5 9.1). 2.25 is the UUID-derived root, so the
# UIDs we derive from a hash are valid without registering anything.
_UID_ROOT = "2.25."

AIR_HU = -1000.0
LUNG_HU = -850.0
SOFT_TISSUE_HU = 40.0
BONE_HU = 700.0
LESION_HU = 30.0
RESCALE_INTERCEPT = -1024.0


def derived_uid(*parts: object) -> str:
    """A valid UID under 2.25 derived from ``parts`` (deterministic, at most 64 characters)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return _UID_ROOT + str(int.from_bytes(digest[:16], "big"))


@dataclass(frozen=True)
class Lesion:
    """A spherical lesion: centre in patient coordinates (mm, LPS) and its diameter."""

    center_mm: tuple[float, float, float]
    diameter_mm: float
    hu: float = LESION_HU

    @property
    def volume_mm3(self) -> float:
        return math.pi / 6.0 * self.diameter_mm**3


@dataclass(frozen=True)
class PhantomSpec:
    """What to generate. ``lesion_diameters_mm`` may be empty: a lesion-free (negative) study."""

    seed: int = 0
    rows: int = 256
    columns: int = 256
    slices: int = 64
    pixel_spacing_mm: float = 1.0
    slice_thickness_mm: float = 1.5
    lesion_diameters_mm: tuple[float, ...] = (10.0,)
    noise_hu: float = 8.0
    body_part: str = "CHEST"
    series_description: str = "Chest CT phantom"


@dataclass(frozen=True)
class PhantomTruth:
    """The ground truth of one phantom series."""

    patient_id: str
    patient_name: str
    patient_sex: str
    patient_age_years: int
    patient_birth_date: str
    study_date: str
    accession_number: str
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    sop_instance_uids: tuple[str, ...]
    lesions: tuple[Lesion, ...]
    pixel_spacing_mm: float
    slice_thickness_mm: float


@dataclass
class Phantom:
    spec: PhantomSpec
    truth: PhantomTruth
    _geometry: _Geometry = field(repr=False)

    def instances(self) -> Iterator[Dataset]:
        """The series' instances, one slice at a time (memory does not grow with the series)."""
        for index in range(self.spec.slices):
            yield _slice_dataset(self, index)

    def write(self, directory: Path) -> list[Path]:
        """Write the series as Part 10 files named by instance number; returns the paths."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for dataset in self.instances():
            path = directory / f"{self.truth.series_instance_uid}-{dataset.InstanceNumber:04d}.dcm"
            dataset.save_as(path, enforce_file_format=True)
            paths.append(path)
        return paths


@dataclass(frozen=True)
class _Geometry:
    origin_mm: tuple[float, float, float]
    body_mask: np.ndarray  # 2D, the same on every slice
    spine_mask: np.ndarray
    lung_semi_axes_mm: tuple[float, float, float]
    lung_centers_mm: tuple[tuple[float, float, float], tuple[float, float, float]]


def generate_phantom(spec: PhantomSpec) -> Phantom:
    """Plan a phantom from its spec: attributes, UIDs, anatomy and lesions (no pixels yet)."""
    rng = np.random.default_rng(spec.seed)
    sex = "F" if rng.random() < 0.5 else "M"
    age = int(rng.integers(25, 90))
    study_day = dt.date(2020, 1, 1) + dt.timedelta(days=int(rng.integers(0, 6 * 365)))
    birth = study_day - dt.timedelta(days=age * 365 + int(rng.integers(1, 360)))
    patient_id = f"PHANTOM-{spec.seed:06d}"
    study_uid = derived_uid("study", spec.seed)
    series_uid = derived_uid("series", spec.seed, spec.series_description)
    geometry = _plan_geometry(spec)
    lesions = _place_lesions(spec, geometry, rng)
    truth = PhantomTruth(
        patient_id=patient_id,
        patient_name=f"Phantom^{('Female' if sex == 'F' else 'Male')}{spec.seed}",
        patient_sex=sex,
        patient_age_years=age,
        patient_birth_date=birth.strftime("%Y%m%d"),
        study_date=study_day.strftime("%Y%m%d"),
        accession_number=f"ACC{spec.seed:08d}",
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        frame_of_reference_uid=derived_uid("frame-of-reference", spec.seed),
        sop_instance_uids=tuple(
            derived_uid("instance", series_uid, index) for index in range(spec.slices)
        ),
        lesions=tuple(lesions),
        pixel_spacing_mm=spec.pixel_spacing_mm,
        slice_thickness_mm=spec.slice_thickness_mm,
    )
    return Phantom(spec=spec, truth=truth, _geometry=geometry)


def _plan_geometry(spec: PhantomSpec) -> _Geometry:
    width_mm = spec.columns * spec.pixel_spacing_mm
    height_mm = spec.rows * spec.pixel_spacing_mm
    x0 = -(spec.columns - 1) / 2.0 * spec.pixel_spacing_mm
    y0 = -(spec.rows - 1) / 2.0 * spec.pixel_spacing_mm
    z0 = -(spec.slices - 1) / 2.0 * spec.slice_thickness_mm
    xs = x0 + np.arange(spec.columns) * spec.pixel_spacing_mm
    ys = y0 + np.arange(spec.rows) * spec.pixel_spacing_mm
    xx, yy = np.meshgrid(xs, ys)
    body_a, body_b = 0.45 * width_mm, 0.36 * height_mm
    body = (xx / body_a) ** 2 + (yy / body_b) ** 2 <= 1.0
    spine = (
        (xx / (0.06 * width_mm)) ** 2 + ((yy - 0.24 * height_mm) / (0.06 * height_mm)) ** 2
    ) <= 1
    depth_mm = spec.slices * spec.slice_thickness_mm
    semi = (0.16 * width_mm, 0.25 * height_mm, max(0.6 * depth_mm, 20.0))
    centers = ((-0.2 * width_mm, -0.02 * height_mm, 0.0), (0.2 * width_mm, -0.02 * height_mm, 0.0))
    return _Geometry(
        origin_mm=(x0, y0, z0),
        body_mask=body,
        spine_mask=spine,
        lung_semi_axes_mm=semi,
        lung_centers_mm=centers,
    )


def _place_lesions(
    spec: PhantomSpec, geometry: _Geometry, rng: np.random.Generator
) -> list[Lesion]:
    """Put each lesion inside a lung, clear of the lung wall, the volume's ends and each other."""
    placed: list[Lesion] = []
    z_half = (spec.slices - 1) / 2.0 * spec.slice_thickness_mm
    ax, ay, az = geometry.lung_semi_axes_mm
    for index, diameter in enumerate(spec.lesion_diameters_mm):
        radius = diameter / 2.0
        for _attempt in range(1000):
            cx, cy, cz = geometry.lung_centers_mm[index % 2]
            # Shrink the lung by the radius plus a margin so the sphere lies wholly in lung.
            margin = radius + 3.0
            u = rng.uniform(-1, 1, size=3)
            if float(np.sum(u**2)) > 1.0:
                continue
            x = cx + u[0] * max(ax - margin, 0.0)
            y = cy + u[1] * max(ay - margin, 0.0)
            z = float(np.clip(cz + u[2] * (az - margin), -z_half + margin, z_half - margin))
            candidate = Lesion(
                (round(float(x), 2), round(float(y), 2), round(z, 2)), float(diameter)
            )
            if not _inside_lung(candidate, geometry):
                continue
            if all(
                _distance(candidate, other) > radius + other.diameter_mm / 2 + 4 for other in placed
            ):
                placed.append(candidate)
                break
        else:
            raise ValueError(f"lesion of {diameter} mm does not fit in this phantom's lungs")
    return placed


def _inside_lung(lesion: Lesion, geometry: _Geometry) -> bool:
    ax, ay, az = geometry.lung_semi_axes_mm
    r = lesion.diameter_mm / 2.0 + 2.0
    for cx, cy, cz in geometry.lung_centers_mm:
        x, y, z = (lesion.center_mm[0] - cx, lesion.center_mm[1] - cy, lesion.center_mm[2] - cz)
        # Conservative test: the sphere's centre within the lung shrunk by r on every axis.
        if (
            ax > r
            and ay > r
            and az > r
            and (x / (ax - r)) ** 2 + (y / (ay - r)) ** 2 + (z / (az - r)) ** 2 <= 1.0
        ):
            return True
    return False


def _distance(a: Lesion, b: Lesion) -> float:
    return math.dist(a.center_mm, b.center_mm)


def slice_hu(phantom: Phantom, index: int) -> np.ndarray:
    """Hounsfield units of slice ``index`` (float32, rows x columns), noise included."""
    spec, geometry = phantom.spec, phantom._geometry
    x0, y0, z0 = geometry.origin_mm
    z = z0 + index * spec.slice_thickness_mm
    xs = x0 + np.arange(spec.columns) * spec.pixel_spacing_mm
    ys = y0 + np.arange(spec.rows) * spec.pixel_spacing_mm
    xx, yy = np.meshgrid(xs, ys)
    image = np.full((spec.rows, spec.columns), AIR_HU, dtype=np.float32)
    image[geometry.body_mask] = SOFT_TISSUE_HU
    ax, ay, az = geometry.lung_semi_axes_mm
    for cx, cy, cz in geometry.lung_centers_mm:
        lung = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 + ((z - cz) / az) ** 2 <= 1.0
        image[lung & geometry.body_mask] = LUNG_HU
    image[geometry.spine_mask] = BONE_HU
    for lesion in phantom.truth.lesions:
        _draw_lesion(image, lesion, xx, yy, z, spec)
    noise_rng = np.random.default_rng([spec.seed, index])
    image += noise_rng.normal(0.0, spec.noise_hu, size=image.shape).astype(np.float32)
    return image


def _draw_lesion(
    image: np.ndarray, lesion: Lesion, xx: np.ndarray, yy: np.ndarray, z: float, spec: PhantomSpec
) -> None:
    """Blend the sphere in with partial-volume weights (fraction of the voxel inside it)."""
    cx, cy, cz = lesion.center_mm
    radius = lesion.diameter_mm / 2.0
    half_thickness = spec.slice_thickness_mm / 2.0
    if abs(z - cz) > radius + half_thickness:
        return
    # Supersample the voxel along z (where it is longest) and use the in-plane signed distance
    # for a linear edge: accurate to a few per cent of the volume for spheres of 5 mm and up.
    fraction = np.zeros_like(image)
    offsets = np.linspace(-half_thickness, half_thickness, 7)
    rr = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    for dz in offsets:
        rz2 = radius**2 - (z + dz - cz) ** 2
        if rz2 <= 0:
            continue
        section = math.sqrt(rz2)
        fraction += np.clip((section - rr) / spec.pixel_spacing_mm + 0.5, 0.0, 1.0)
    fraction /= len(offsets)
    mask = fraction > 0
    image[mask] = image[mask] * (1 - fraction[mask]) + lesion.hu * fraction[mask]


def _slice_dataset(phantom: Phantom, index: int) -> Dataset:
    spec, truth, geometry = phantom.spec, phantom.truth, phantom._geometry
    x0, y0, z0 = geometry.origin_mm
    z = z0 + index * spec.slice_thickness_mm
    hu = slice_hu(phantom, index)
    stored = np.clip(np.rint(hu - RESCALE_INTERCEPT), 0, 4095).astype(np.uint16)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(truth.sop_instance_uids[index])
    meta.TransferSyntaxUID = UID(ExplicitVRLittleEndian)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = truth.sop_instance_uids[index]
    ds.StudyDate = truth.study_date
    ds.SeriesDate = truth.study_date
    ds.ContentDate = truth.study_date
    ds.StudyTime = "093000"
    ds.SeriesTime = "093100"
    ds.ContentTime = "093100"
    ds.AccessionNumber = truth.accession_number
    ds.Modality = "CT"
    ds.Manufacturer = "fedgate phantom"
    ds.InstitutionName = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Chest CT"
    ds.SeriesDescription = spec.series_description
    ds.ManufacturerModelName = "Synthetic"
    ds.PatientName = truth.patient_name
    ds.PatientID = truth.patient_id
    ds.PatientBirthDate = truth.patient_birth_date
    ds.PatientSex = truth.patient_sex
    ds.PatientAge = f"{truth.patient_age_years:03d}Y"
    ds.BodyPartExamined = spec.body_part
    ds.SliceThickness = f"{spec.slice_thickness_mm:g}"
    ds.KVP = "120"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = truth.study_instance_uid
    ds.SeriesInstanceUID = truth.series_instance_uid
    ds.StudyID = f"{spec.seed}"
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [f"{x0:.4f}", f"{y0:.4f}", f"{z:.4f}"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = truth.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{z:.4f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = spec.rows
    ds.Columns = spec.columns
    ds.PixelSpacing = [f"{spec.pixel_spacing_mm:g}", f"{spec.pixel_spacing_mm:g}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1500"
    ds.RescaleIntercept = f"{RESCALE_INTERCEPT:g}"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.PixelData = stored.tobytes()
    return ds
