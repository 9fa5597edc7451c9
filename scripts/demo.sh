#!/usr/bin/env bash
# Sets everything up and runs the main job on the embedded default (no external PACS):
# a gateway and an inference service with the bundled models; synthetic chest CT studies are
# sent in as a PACS would, analysed, and the results printed. Keeps serving (Ctrl-C stops);
# pass --once to exit after the results.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/fedgate demo --data-dir fedgate-demo "$@"
