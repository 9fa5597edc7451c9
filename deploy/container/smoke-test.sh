#!/usr/bin/env bash
# Builds the gateway image and starts it as a deployment would: non-root, read-only root file
# system, /tmp on tmpfs, data on a volume; passes when /healthz and /readyz answer, the image's
# HEALTHCHECK command succeeds and the volume holds the gateway's data. By hand, for one image;
# the test suite's tests/deploy/test_containers.py builds and starts the whole compose site.
#
#   deploy/container/smoke-test.sh [--engine podman|docker] [--port 18080]
#
# Options for a podman without systemd (as on the CI machines; docs/deploy.md):
#   FEDGATE_ENGINE_OPTIONS="--storage-driver overlay --cgroup-manager cgroupfs --events-backend file --runtime runc"
#   FEDGATE_RUN_OPTIONS="--ulimit nofile=20000:20000 --ulimit nproc=32768:32768"
# Behind a TLS-inspecting proxy: FEDGATE_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
set -euo pipefail
cd "$(dirname "$0")/../.."
engine=podman
port=18080
while [ $# -gt 0 ]; do
  case "$1" in
    --engine) engine=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    *) echo "smoke-test.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
read -r -a engine_options <<<"${FEDGATE_ENGINE_OPTIONS:-}"
read -r -a run_options <<<"${FEDGATE_RUN_OPTIONS:-}"
build_options=(--network host)
[ -n "${FEDGATE_CA_BUNDLE:-}" ] && build_options+=(--secret "id=ca-bundle,src=$FEDGATE_CA_BUNDLE")
[ "$engine" = podman ] && build_options+=(--format docker)
run() { "$engine" "${engine_options[@]}" "$@"; }

if ! run image exists localhost/fedgate-base:bookworm 2>/dev/null; then
  FEDGATE_ENGINE_OPTIONS="${FEDGATE_ENGINE_OPTIONS:-}" deploy/container/build-base.sh --engine "$engine"
fi
started=$(date +%s)
run build "${build_options[@]}" "${run_options[@]}" -f deploy/container/Dockerfile \
  --target gateway -t localhost/fedgate-gateway:smoke-test .
echo "smoke-test.sh: built in $(($(date +%s) - started)) s"

data=$(mktemp -d)
name="fedgate-smoke-test-$$"
cleanup() { run rm -f "$name" >/dev/null 2>&1 || true; rm -rf "$data"; }
trap cleanup EXIT
chown 10001:10001 "$data" 2>/dev/null || chmod 0777 "$data"
started=$(date +%s)
# --network host: the gateway without auth.clients listens on loopback only, which the host
# then reaches; --health-cmd none: podman's health timers need systemd (run the check by hand).
run run -d --name "$name" --read-only --tmpfs /tmp --network host --health-cmd none \
  "${run_options[@]}" -e "FEDGATE_LISTEN__PORT=$port" \
  -e "HEALTHCHECK_URL=http://127.0.0.1:$port/healthz" \
  -v "$data:/var/lib/fedgate" localhost/fedgate-gateway:smoke-test >/dev/null
for _ in $(seq 1 120); do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/readyz', timeout=2)" 2>/dev/null && break
  sleep 0.5
done
python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$port/readyz', timeout=2).read().decode())" \
  || { run logs "$name" >&2; exit 1; }
echo "smoke-test.sh: ready $(($(date +%s) - started)) s after start"
run exec "$name" python3 -c "import os, urllib.request; urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=4)"
[ "$(run exec "$name" id -u)" != 0 ] || { echo "smoke-test.sh: runs as root" >&2; exit 1; }
[ -s "$data/index-salt" ] && [ -d "$data/store" ] || { echo "smoke-test.sh: no data in the volume" >&2; exit 1; }
echo "smoke-test.sh: passed"
