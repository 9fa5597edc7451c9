"""``fedgate phantom``: write synthetic chest CT phantom studies as Part 10 files."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from fedgate.phantom import PhantomSpec, generate_phantom


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--studies", type=int, default=1, help="how many studies (seeds)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first study")
    parser.add_argument("--size", type=int, default=256, help="rows and columns")
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument(
        "--lesions", default="10", help="comma-separated lesion diameters in mm ('' for none)"
    )


def run(args: argparse.Namespace) -> int:
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
