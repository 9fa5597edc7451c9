"""The ``fedgate`` console script.

Each sub-command lives in its own module and is imported only when it runs, so that
``fedgate gateway`` never loads onnxruntime and ``fedgate inference`` never loads the
gateway. A sub-command module exposes ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# name -> (module, one-line help). Keep sorted by name.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "analysis": ("fedgate.commands.analysis", "federated analyses: submit, approve, follow, pause"),
    "audit": ("fedgate.commands.audit", "show the federated audit log"),
    "backup": ("fedgate.commands.backup", "back up data_dir (and PostgreSQL) into one archive"),
    "convert": ("fedgate.commands.convert", "convert clinical tables and ECG recordings to DICOM"),
    "demo": ("fedgate.commands.demo", "run the whole pipeline on synthetic studies (no PACS)"),
    "doctor": ("fedgate.commands.doctor", "check a deployment: PACS, tokens, models, disk, clock"),
    "findings": ("fedgate.commands.findings", "print the findings of TID 1500 SR files as JSON"),
    "gateway": ("fedgate.commands.gateway", "serve the gateway (DICOMweb, jobs, federated API)"),
    "hub": ("fedgate.commands.hub", "ask many sites' federated APIs at once (a federation hub)"),
    "index": ("fedgate.commands.index", "the findings index: sync from the PACS, show counts"),
    "inference": ("fedgate.commands.inference", "serve a model repository (OIP v2, /v1/analyses)"),
    "learn": ("fedgate.commands.learn", "federated learning on Flower: plans, sites, runs"),
    "models": ("fedgate.commands.models", "build the bundled models into a model repository"),
    "phantom": ("fedgate.commands.phantom", "write synthetic chest CT phantom studies"),
    "restore": ("fedgate.commands.restore", "restore a backup made by fedgate backup"),
    "store": ("fedgate.commands.store", "check the embedded store against its catalog, repair"),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="fedgate", description="DICOMweb AI gateway beside a PACS, with federated aggregates."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module_name)
        # Only the chosen command's module is imported: its arguments are its own business.
        if argv and argv[0] == name:
            importlib.import_module(module_name).add_arguments(sub_parser)
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        result: int = module.run(args)
    except BrokenPipeError:
        # The reader went away (``fedgate findings *.dcm | head``): not an error of ours.
        # Point stdout at /dev/null so that the interpreter's final flush cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command that a pipe closed
    return result
