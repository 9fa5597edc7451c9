"""``fedgate phantom``: synthetic chest CT phantom studies, or whole synthetic sites.

``fedgate phantom --out DIR --studies N`` writes CT phantom studies as Part 10 files.

``fedgate phantom --sites 3 --patients 200 --out DIR`` writes three sites' patients (a CT with
nodules, a clinical SR with smoking, LVEF and the outcome, an ECG and its measurements; see
:mod:`fedgate.phantom_cohort`) into ``DIR/site-N/``, with ``DIR/truth.json`` (the model the
outcome was drawn from) and each site's ``truth.csv``; with ``--stow URL`` once per site instead
of ``--out``, the instances are stored into those sites' gateways (STOW-RS).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from requests.exceptions import HTTPError

from fedgate.phantom import PhantomSpec, generate_phantom
from fedgate.phantom_cohort import (
    CODES,
    TRUE_MODEL,
    CohortPatient,
    cohort_instances,
    generate_cohort,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, help="folder to write into")
    parser.add_argument("--studies", type=int, default=1, help="how many studies (seeds)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first study")
    parser.add_argument("--size", type=int, default=256, help="rows and columns")
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument(
        "--lesions", default="10", help="comma-separated lesion diameters in mm ('' for none)"
    )
    sites = parser.add_argument_group("synthetic sites (federated learning)")
    sites.add_argument("--sites", type=int, help="how many sites: write whole synthetic sites")
    sites.add_argument("--patients", type=int, default=100, help="patients per site")
    sites.add_argument(
        "--stow",
        action="append",
        default=[],
        metavar="URL",
        help="a site's DICOMweb root to store into, once per site (instead of --out)",
    )
    sites.add_argument("--token", help="bearer token for --stow (a forwarder or admin token)")


def run(args: argparse.Namespace) -> int:
    if args.sites is not None:
        return _sites(args)
    if args.out is None:
        print("fedgate phantom: --out is required", file=sys.stderr)
        return 2
    diameters = tuple(float(d) for d in args.lesions.split(",") if d.strip())
    for offset in range(args.studies):
        spec = PhantomSpec(
            seed=args.seed + offset,
            rows=args.size,
            columns=args.size,
            slices=args.slices,
            lesion_diameters_mm=diameters,
        )
        phantom = generate_phantom(spec)
        folder = args.out / phantom.truth.study_instance_uid
        phantom.write(folder)
        (folder / "truth.json").write_text(json.dumps(asdict(phantom.truth), indent=2))
        print(f"{folder} ({spec.slices} instances)", flush=True)
    return 0


def _sites(args: argparse.Namespace) -> int:
    if args.sites < 1 or args.patients < 1:
        print("fedgate phantom: --sites and --patients must be at least 1", file=sys.stderr)
        return 2
    if (args.out is None) == (not args.stow):
        print("fedgate phantom: give --out DIR or --stow URL (once per site)", file=sys.stderr)
        return 2
    if args.stow and len(args.stow) != args.sites:
        print(f"fedgate phantom: {args.sites} sites need {args.sites} --stow URLs", file=sys.stderr)
        return 2
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "truth.json").write_text(json.dumps({"model": TRUE_MODEL, "codes": CODES}))
    for site in range(1, args.sites + 1):
        patients = generate_cohort(site, args.patients, args.seed)
        if args.out is not None:
            folder = args.out / f"site-{site}"
            folder.mkdir(exist_ok=True)
            _write_truth(folder / "truth.csv", patients)
            deliver = _file_writer(folder)
        else:
            headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
            client = DICOMwebClient(args.stow[site - 1], headers=headers)
            deliver = _stower(client)
        for done, patient in enumerate(patients, start=1):
            try:
                deliver(list(cohort_instances(patient)))
            except (OSError, HTTPError) as error:
                print(f"\nfedgate phantom: site {site}: {error}", file=sys.stderr)
                return 1
            end = "\n" if done == len(patients) else ""
            print(f"\rsite {site}: {done}/{len(patients)} patients", end=end, file=sys.stderr)
    return 0


def _stower(client: DICOMwebClient) -> Callable[[list[Dataset]], None]:
    def store(datasets: list[Dataset]) -> None:
        client.store_instances(datasets)

    return store


def _file_writer(folder: Path) -> Callable[[list[Dataset]], None]:
    def write(datasets: list[Dataset]) -> None:
        for dataset in datasets:
            dataset.save_as(folder / f"{dataset.SOPInstanceUID}.dcm", enforce_file_format=True)

    return write


def _write_truth(path: Path, patients: list[CohortPatient]) -> None:
    """One row per patient: what the site holds, the true probability and the outcome drawn."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["patient_id", "sex", "age", "smoking", "lvef", "heart_rate", "qtc",
             "largest_nodule_mm", "probability", "lung_cancer"]
        )  # fmt: skip
        for p in patients:
            writer.writerow(
                [p.patient_id, p.sex, p.age, p.smoking, p.lvef, p.heart_rate, p.qtc,
                 p.largest_nodule_mm, round(p.probability, 6), int(p.lung_cancer)]
            )  # fmt: skip
