#!/usr/bin/env bash
# Installs everything fedgate needs on a fresh Debian 12 machine, idempotently:
# Debian packages, the Python virtual environment with the project, npm packages for the
# viewer tests, and the bundled models. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv python3-dev build-essential
  orthanc orthanc-dicomweb dcmtk dicom3tools
  postgresql chromium nodejs npm
  prometheus  # promtool: tests/operations check deploy/prometheus (alert rules, config)
  # tests/deploy: `docker-compose config` on deploy/compose (Compose v1; the docker CLI's compose
  # plugin is used instead where installed), systemd-analyze on deploy/systemd, openssl for the
  # hub key that deploy/compose/make-secrets.sh writes.
  docker-compose systemd openssl
  # tests/deploy/test_containers.py builds the images and starts the compose site: rootful
  # podman with runc (crun 1.8 refuses a hybrid cgroup hierarchy) and CNI networking, whose
  # dnsname plugin lets the services find each other by name; podman-compose reads
  # deploy/compose; mmdebstrap writes the base image from Debian packages; iptables for CNI's
  # port mappings. The settings podman needs here: scripts/setup.d/50-containers.sh.
  podman runc containernetworking-plugins golang-github-containernetworking-plugin-dnsname
  podman-compose mmdebstrap iptables
)
# tests/deploy: `kubectl kustomize` renders deploy/kubernetes; Debian 12's kubectl (1.20, package
# kubernetes-client) renders it as a current one does. Only when no kubectl is installed.
command -v kubectl >/dev/null || APT_PACKAGES+=(kubernetes-client)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
# A machine may already provide python3/node outside dpkg (pyenv, nodesource): keep those.
filtered=()
for package in "${missing[@]:-}"; do
  case "$package" in
    python3|python3-venv|python3-dev) python3 -c 'import venv, ensurepip' 2>/dev/null && continue ;;
    nodejs|npm) command -v node >/dev/null && command -v npm >/dev/null && continue ;;
    build-essential) command -v cc >/dev/null && continue ;;
    "") continue ;;
  esac
  filtered+=("$package")
done
if [ "${#filtered[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${filtered[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${filtered[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating the virtual environment in .venv"
  python3 -m venv .venv
fi
stamp=.venv/.fedgate-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing fedgate and its dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi

for hook in scripts/setup.d/*.sh; do
  [ -e "$hook" ] || continue
  bash "$hook"
done
echo "setup: done"
