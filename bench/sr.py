"""Benchmark: building TID 1500 SRs and SEGs with sr_writer, against highdicom alone.

    python bench/sr.py [--slices 300] [--size 512] [--repeat 3]

Cases (issue 3): one SR with 1, 10 and 100 planar ROI groups over a 300-instance evidence set
(header-only datasets, as the inference service has them), and one binary SEG of a
512x512x300 mask (a sparse one: two lesions; a dense one: the body outline on every slice, so
all 300 frames are encoded). Each case runs in a fresh process, so its peak RSS is its own and
its first call pays highdicom's one-off costs; the figure reported is the median of the warm
calls after it, with the first call beside it.

The peer is highdicom alone, measured in the same run: the same SR/SEG built straight from
highdicom's API without the findings model, the validation, the Part 10 preparation. The
ratio sr_writer/highdicom is our overhead.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import highdicom as hd  # noqa: E402
import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.sr.codedict import codes as dcm_codes  # noqa: E402

from fedgate.phantom import PhantomSpec, generate_phantom  # noqa: E402
from sr_writer import (  # noqa: E402
    AlgorithmIdentification,
    Evidence,
    Finding,
    Findings,
    ImageRegion,
    Measurement,
    QualitativeEvaluation,
    SegmentDescription,
    build_seg,
    build_sr,
    codes,
)

ALGORITHM = AlgorithmIdentification(
    name="bench-nodules", version="1.0.0", uid="2.25.42", manufacturer="fedgate bench"
)


def write_headers(directory: Path, slices: int, size: int) -> None:
    """The phantom's instances without Pixel Data, as files (each case process reads them)."""
    phantom = generate_phantom(
        PhantomSpec(
            seed=7,
            rows=size,
            columns=size,
            slices=slices,
            pixel_spacing_mm=0.7,
            slice_thickness_mm=1.0,
            lesion_diameters_mm=(12.0, 8.0),
        )
    )
    for dataset in phantom.instances():
        del dataset.PixelData
        dataset.save_as(
            directory / f"{int(dataset.InstanceNumber):04d}.dcm", enforce_file_format=True
        )


def read_headers(directory: Path) -> list[Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(directory.glob("*.dcm"))]


def findings_for(evidence: list[Dataset], groups: int) -> Findings:
    size = int(evidence[0].Columns)
    items = []
    for index in range(groups):
        image = evidence[(index * 7) % len(evidence)]
        center = 60.0 + (index * 37) % (size - 120)
        items.append(
            Finding(
                finding_type=codes.NODULE,
                finding_site=codes.LUNG,
                tracking_identifier=f"Nodule {index + 1}",
                measurements=(
                    Measurement(name=codes.DIAMETER, value=5.0 + index % 20, unit=codes.MILLIMETER),
                ),
                qualitative_evaluations=(
                    QualitativeEvaluation(name=codes.PRESENCE, value=codes.PRESENT),
                ),
                probability=0.5 + (index % 50) / 100,
                region=ImageRegion(
                    graphic_type="CIRCLE",
                    points=((center, center), (center + 10.0, center)),
                    sop_instance_uid=str(image.SOPInstanceUID),
                ),
            )
        )
    return Findings(
        algorithm=ALGORITHM, evidence=Evidence.from_datasets(evidence), findings=tuple(items)
    )


def highdicom_sr(findings: Findings, evidence: list[Dataset]) -> Dataset:
    """The same document straight from highdicom's API (the peer)."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in evidence}
    algorithm = hd.sr.AlgorithmIdentification(name=ALGORITHM.name, version=ALGORITHM.version)
    groups = []
    library = {}
    for finding in findings.findings:
        region = finding.region
        assert isinstance(region, ImageRegion)
        image = by_uid[region.sop_instance_uid]
        library[region.sop_instance_uid] = image
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=hd.UID(), identifier=finding.tracking_identifier
                ),
                referenced_region=hd.sr.ImageRegion(
                    graphic_type=hd.sr.GraphicTypeValues.CIRCLE,
                    graphic_data=np.asarray(region.points),
                    source_image=hd.sr.SourceImageForRegion(
                        image.SOPClassUID, image.SOPInstanceUID
                    ),
                ),
                finding_type=dcm_codes.SCT.Nodule,
                algorithm_id=algorithm,
                finding_sites=[hd.sr.FindingSite(dcm_codes.SCT.Lung)],
                measurements=[
                    hd.sr.Measurement(
                        name=dcm_codes.SCT.Diameter,
                        value=finding.measurements[0].value,
                        unit=dcm_codes.UCUM.Millimeter,
                    ),
                    hd.sr.Measurement(
                        name=dcm_codes.DCM.Probability,
                        value=float(finding.probability or 0.0),
                        unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
                    ),
                ],
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(
                        dcm_codes.DCM.PresenceOfProperty, dcm_codes.DCM.Present
                    )
                ],
            )
        )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=dcm_codes.DCM.Device,
                observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                    uid=ALGORITHM.uid
                ),
            )
        ),
        procedure_reported=dcm_codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
        referenced_images=list(library.values()),
    )
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=hd.UID(),
        series_number=1,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="fedgate bench",
        is_complete=True,
    )


def masks(evidence: list[Dataset], dense: bool) -> np.ndarray:
    slices, size = len(evidence), int(evidence[0].Rows)
    if dense:
        yy, xx = np.mgrid[0:size, 0:size]  # the body outline on every slice: every frame is encoded
        body = ((xx - size / 2) / (0.45 * size)) ** 2 + ((yy - size / 2) / (0.36 * size)) ** 2
        return np.broadcast_to(body <= 1.0, (slices, size, size)).copy()
    mask = np.zeros((slices, size, size), dtype=bool)
    for fz, fy, fx, r in ((1 / 3, 0.4, 0.3, 9), (2 / 3, 0.5, 0.7, 6)):
        center = (int(fz * slices), int(fy * size), int(fx * size))
        # Only the sphere's bounding box (clipped to the volume): a full-volume int64 grid
        # would be 600 MB.
        box = tuple(
            slice(max(c - r, 0), min(c + r + 1, n))
            for c, n in zip(center, (slices, size, size), strict=True)
        )
        zz, yy, xx = np.mgrid[box]
        cz, cy, cx = center
        mask[box] |= (zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    return mask


SEGMENT = SegmentDescription(
    number=1, label="Nodule", category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, type=codes.NODULE
)


def highdicom_seg(mask: np.ndarray, evidence: list[Dataset]) -> Dataset:
    return hd.seg.Segmentation(
        source_images=evidence,
        pixel_array=mask,
        segmentation_type="BINARY",
        segment_descriptions=[
            hd.seg.SegmentDescription(
                segment_number=1,
                segment_label="Nodule",
                segmented_property_category=dcm_codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=dcm_codes.SCT.Nodule,
                algorithm_type="AUTOMATIC",
                algorithm_identification=hd.AlgorithmIdentificationSequence(
                    name=ALGORITHM.name,
                    family=dcm_codes.DCM.ArtificialIntelligence,
                    version=ALGORITHM.version,
                ),
            )
        ],
        series_instance_uid=hd.UID(),
        series_number=2,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="fedgate bench",
        manufacturer_model_name="bench",
        software_versions="1.0.0",
        device_serial_number="1",
    )


def run_case(headers: str, case: str, who: str, repeat: int, queue: Any) -> None:
    """One case in its own process: first call, warm calls, peak RSS."""
    evidence = read_headers(Path(headers))
    build: Callable[[], Dataset]
    if case.startswith("sr-"):
        findings = findings_for(evidence, int(case[3:]))
        if who == "sr_writer":

            def build() -> Dataset:
                return build_sr(findings, evidence)
        else:

            def build() -> Dataset:
                return highdicom_sr(findings, evidence)
    else:
        mask = masks(evidence, dense=case == "seg-dense")
        if who == "sr_writer":

            def build() -> Dataset:
                return build_seg(mask, evidence, [SEGMENT], ALGORITHM)
        else:

            def build() -> Dataset:
                return highdicom_seg(mask, evidence)

    times = []
    for _ in range(repeat + 1):
        start = time.perf_counter()
        dataset = build()
        times.append(time.perf_counter() - start)
    frames = int(dataset.get("NumberOfFrames", 0) or 0)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((times[0], statistics.median(times[1:]), peak_mib, frames))


def measure(headers: Path, case: str, who: str, repeat: int) -> tuple[float, float, float, int]:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=run_case, args=(str(headers), case, who, repeat, queue))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"{case} ({who}) failed: exit code {process.exitcode}")
    return queue.get(timeout=10)  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3, help="warm calls after the first")
    args = parser.parse_args()
    cases = ["sr-1", "sr-10", "sr-100", "seg-sparse", "seg-dense"]
    with tempfile.TemporaryDirectory() as directory:
        headers = Path(directory)
        write_headers(headers, args.slices, args.size)
        print(f"evidence: {args.slices} header-only CT instances of {args.size}x{args.size}")
        print(
            "| case | sr_writer first / warm (ms) | highdicom first / warm (ms) | "
            "ratio (warm) | peak RSS sr_writer / highdicom (MiB) |"
        )
        print("|---|---|---|---|---|")
        for case in cases:
            ours = measure(headers, case, "sr_writer", args.repeat)
            peer = measure(headers, case, "highdicom", args.repeat)
            label = case
            if case.startswith("seg"):
                label = f"{case} ({ours[3]} frames)"
            print(
                f"| {label} | {ours[0] * 1000:.0f} / {ours[1] * 1000:.0f} | "
                f"{peer[0] * 1000:.0f} / {peer[1] * 1000:.0f} | {ours[1] / peer[1]:.2f} | "
                f"{ours[2]:.0f} / {peer[2]:.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
