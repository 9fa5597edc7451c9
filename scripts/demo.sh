#!/usr/bin/env bash
# Sets everything up and runs the main job on the embedded default (no external PACS).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/fedgate gateway --config deploy/gateway.example.yaml "$@"
