#!/usr/bin/env bash
# The bundled models (issue 4) into the git-ignored models/ repository: built from the onnx
# helper API by `fedgate models build` (no download; byte-identical on every machine). Rebuilds
# only when a model file is missing or the code that builds them changed since.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
stale=false
for name in nodule-detector nodule-presence; do
  [ -f "models/$name/model.onnx" ] && [ -f "models/$name/model.yaml" ] || stale=true
done
if [ "$stale" = false ] && [ -n "$(find inference_service/models inference_service/manifest.py \
    -name '*.py' -newer models/nodule-detector/model.onnx 2>/dev/null)" ]; then
  stale=true
fi
if [ "$stale" = true ]; then
  echo "setup: building the bundled models into models/"
  "$python" -m fedgate models build --out models >/dev/null
fi
